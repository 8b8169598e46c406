"""End to end with real containers: `ondrop up` finds podman and runs services that
name an image in containers, limited and cleaned up, also after a crash."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.up import Platform

pytestmark = pytest.mark.e2e


def fdl(folder: Path, image: str, script: str, memory: str = "64Mi", extra: str = "") -> Path:
    (folder / "count.sh").write_text(script)
    path = folder / "count.yaml"
    path.write_text(f"""
services:
  - name: count
    image: {image}
    script: count.sh
    memory: {memory}
    timeout: 60
    input: [{{path: words/in}}]
    output: [{{path: words/out}}]
{extra}""")
    return path


@pytest.fixture
def up(tmp_path: Path, busybox: str) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start()
    yield platform
    platform.stop_now(0.3)


def containers(prefix: str = "ondrop-") -> list[str]:
    found = subprocess.run(["crun", "list", "-q"], capture_output=True, text=True).stdout.split()
    found += subprocess.run(["runc", "list", "-q"], capture_output=True, text=True).stdout.split()
    return [c for c in found if c.startswith(prefix)]


def test_files_dropped_for_a_containerised_service_are_processed_in_containers(
    up: Platform, tmp_path: Path, busybox: str
) -> None:
    script = (
        'wc -w < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").n"\n'
        'echo "counted in $(hostname) as $(id -u)"\n'
    )
    applied = up.cli("apply", str(fdl(tmp_path, busybox, script)))
    assert "created count" in applied.stdout
    inbox = up.data / "storage" / "words" / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (inbox / f"doc{i}.txt").write_text("one two three " * (i + 1))
    deadline = time.monotonic() + 30
    out = up.data / "storage" / "words" / "out"
    while len(list(out.glob("*.n")) if out.exists() else []) < 5:
        assert time.monotonic() < deadline, "the outputs did not appear"
        time.sleep(0.1)
    assert sorted(int((out / f"doc{i}.txt.n").read_text()) for i in range(5)) == [3, 6, 9, 12, 15]
    assert up.cli("wait", "count").returncode == 0
    url = json.loads((up.data / "endpoint.json").read_text())["url"]
    password = json.loads((up.data / "admin.json").read_text())["password"]
    info = httpx.get(f"{url}/system/info", auth=("admin", password)).json()
    assert info["container_engine"].startswith("podman")
    # Its root is an unprivileged host uid: the data folder's block of host ids.
    tag = int(hashlib.sha256(str(up.data.resolve()).encode()).hexdigest()[:8], 16)
    first = 2_100_000_000 + tag % 4096 * 65536
    assert info["runtimes"]["container"].endswith(
        f"; user namespace: ids 0-65535 are host ids {first}-{first + 65535}"
    ), info["runtimes"]
    job = next(iter(httpx.get(f"{url}/system/logs/count", auth=("admin", password)).json()["jobs"]))
    log = up.cli("logs", "count", job).stdout
    assert log.startswith("counted in count-") and log.endswith("as 0\n")


def test_an_image_that_does_not_exist_is_refused_at_apply(up: Platform, tmp_path: Path) -> None:
    result = up.cli("apply", str(fdl(tmp_path, "grycap/darknet", "true")), check=False)
    assert result.returncode == 1
    assert (
        "image grycap/darknet is not in podman's store and the pull policy is never "
        "(ONDROP_PULL): build or import it first"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_job_whose_image_is_gone_waits_until_it_is_imported_again(
    up: Platform, tmp_path: Path, busybox: str
) -> None:
    tag = f"localhost/ondrop-test-gone:{tmp_path.name[-12:].lower()}"
    subprocess.run(["podman", "tag", busybox, tag], check=True)
    try:
        assert (
            "created count"
            in up.cli("apply", str(fdl(tmp_path, tag, "cat $INPUT_FILE_PATH\n"))).stdout
        )
        # gone while the platform is down (a running one trusts what it checked for 10 s)
        up.stop()
        subprocess.run(["podman", "rmi", tag], check=True, capture_output=True)
        up.start()
        inbox = up.data / "storage" / "words" / "in"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "a.txt").write_text("hello")
        url = json.loads((up.data / "endpoint.json").read_text())["url"]
        password = json.loads((up.data / "admin.json").read_text())["password"]

        def jobs() -> dict[str, dict[str, str]]:
            answer = httpx.get(f"{url}/system/logs/count", auth=("admin", password))
            return dict(answer.json()["jobs"])

        deadline = time.monotonic() + 60
        while not any(
            "the job waits until it is here" in j.get("reason", "") for j in jobs().values()
        ):
            assert time.monotonic() < deadline, jobs()
            time.sleep(0.1)
        (job,) = jobs().values()
        assert job["status"] == "Pending" and tag in job["reason"]
        # imported again (here: tagged), the job runs, its retries untouched
        subprocess.run(["podman", "tag", busybox, tag], check=True)
        assert up.cli("wait", "count").returncode == 0
        assert [j["status"] for j in jobs().values()] == ["Succeeded"]
    finally:
        subprocess.run(["podman", "rmi", "-i", tag], capture_output=True)


def test_no_container_or_cgroup_is_left_after_a_crash_and_a_restart(
    up: Platform, tmp_path: Path, busybox: str
) -> None:
    prefix = "ondrop-" + hashlib.sha256(str(up.data.resolve()).encode()).hexdigest()[:8]
    up.cli("apply", str(fdl(tmp_path, busybox, "sleep 60\n")))
    (tmp_path / "a.txt").write_text("a")
    up.cli("put", "count", str(tmp_path / "a.txt"))
    deadline = time.monotonic() + 20
    while not containers(prefix):
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.05)
    (name,) = containers(prefix)
    pid = (
        json.loads(
            subprocess.run(["crun", "state", name], capture_output=True, text=True).stdout or "{}"
        ).get("pid")
        or json.loads(
            subprocess.run(["runc", "state", name], capture_output=True, text=True).stdout
        )["pid"]
    )
    up.stop(signal.SIGKILL)
    assert Path(f"/proc/{pid}").exists(), "the container should outlive the killed platform"
    up.start()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the crashed job's container was not removed"
        time.sleep(0.05)
    # The job runs again in a new container; stop the platform at once, then look around.
    assert up.proc is not None
    up.stop_now(0.3)
    assert containers(prefix) == []
    leftovers = subprocess.run(
        f"ls -d /sys/fs/cgroup/*/ondrop/{prefix}* /sys/fs/cgroup/ondrop/{prefix}* 2>/dev/null",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout
    assert leftovers == ""


def test_a_warm_service_reuses_its_containers_and_leaves_none_after_a_crash(
    up: Platform, tmp_path: Path, busybox: str
) -> None:
    prefix = "ondrop-" + hashlib.sha256(str(up.data.resolve()).encode()).hexdigest()[:8]
    script = 'hostname > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").host"\n'
    up.cli("apply", str(fdl(tmp_path, busybox, script, extra="    warm: 60\n")))
    inbox = up.data / "storage" / "words" / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    out = up.data / "storage" / "words" / "out"
    for i in range(6):
        (inbox / f"doc{i}.txt").write_text("x")
        deadline = time.monotonic() + 30
        while not (out / f"doc{i}.txt.host").exists():
            assert time.monotonic() < deadline, "the output did not appear"
            time.sleep(0.05)
    hosts = {p.read_text().strip() for p in out.glob("*.host")}
    assert len(hosts) == 1 and next(iter(hosts)).startswith("warm-count-"), hosts
    (warm,) = containers(prefix)  # kept, idle, for the next file
    pid = json.loads(
        subprocess.run(["crun", "state", warm], capture_output=True, text=True).stdout
    )["pid"]
    up.stop(signal.SIGKILL)
    up.start()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the dead platform's warm container was not removed"
        time.sleep(0.05)
    (inbox / "after.txt").write_text("x")
    deadline = time.monotonic() + 30
    while not (out / "after.txt.host").exists():
        assert time.monotonic() < deadline, "the output did not appear after the restart"
        time.sleep(0.05)
    assert len(containers(prefix)) == 1
    assert up.proc is not None
    up.stop_now(0.3)
    assert containers(prefix) == []  # a clean stop removes the warm containers


def test_the_wordcount_example_and_an_image_built_at_apply(
    up: Platform, tmp_path: Path, busybox: str
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "wordcount"
    (tmp_path / "wordcount.sh").write_text((example / "wordcount.sh").read_text())
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "Containerfile").write_text(
        f"FROM {busybox}\nRUN echo built-at-apply > /etc/marker\n"
    )
    fdl_text = (example / "wordcount.yaml").read_text()
    fdl_text = fdl_text.replace(
        "image: localhost/busybox:latest",
        "image: localhost/ondrop-test-wordcount:1\n    build: image",
    )
    (tmp_path / "wordcount.yaml").write_text(fdl_text)
    applied = up.cli("apply", str(tmp_path / "wordcount.yaml"))
    assert "built localhost/ondrop-test-wordcount:1" in applied.stderr
    (tmp_path / "story.txt").write_text("the cat and the dog and the bird\n")
    up.cli("put", "wordcount", str(tmp_path / "story.txt"))
    assert up.cli("wait", "wordcount").returncode == 0
    up.cli("get", "wordcount", "-o", str(tmp_path / "counts"))
    top = (tmp_path / "counts" / "story.top20").read_text().split()
    assert top[:4] == ["3", "the", "2", "and"]
