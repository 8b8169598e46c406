"""The container runtime's promises beyond the contract: limits are enforced, the network
is off unless asked for, the image is read-only, nothing is left behind."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.exposed import socket_in
from ondrop.jobs import Cause
from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.container import ContainerRuntime
from ondrop.runtime.oci import Bind, bundle_config
from tests.support.images import container_runtime
from tests.support.waiting import wait_for


@pytest.fixture(params=["oci", "engine", "docker"])
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerRuntime]:
    engine = "docker" if request.param == "docker" else "podman"  # docker: its CLI
    runtime = container_runtime(engine, tmp_path_factory.mktemp("img"), request.param == "oci")
    yield runtime
    runtime.clean()


def run(
    runtime: ContainerRuntime, work: Path, script: str, image: str, **options: object
) -> RunResult:
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir(exist_ok=True)
    (work / "script").write_text(script)
    spec = RunSpec(
        job_id=f"job-{time.monotonic_ns()}",
        script=work / "script",
        workdir=work,
        env={},
        timeout=20,
        log=work / "log",
        image=image,
    )
    return runtime.run(RunSpec(**{**spec.__dict__, **options}))


def test_a_job_over_its_memory_limit_fails_saying_so(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    result = run(runtime, tmp_path, "tail /dev/zero", busybox, memory=32 * 1024**2)
    assert result.reason == "out of memory (limit 32Mi)"
    assert result.cause is Cause.OOM
    ok = run(runtime, tmp_path, "head -c 1000000 /dev/zero | wc -c", busybox, memory=32 * 1024**2)
    assert ok.ok, (tmp_path / "log").read_text()


# The line ondrop adds to the log (on cgroup v1 the kernel counts the times the limit
# ran out, which may be more than the processes it killed).
KILLED = (
    r"\[ondrop\] (a process|\d+ processes) of this job (was|were) killed: "
    r"out of memory \(limit 32Mi\)"
)


def test_a_process_killed_for_memory_fails_the_job_though_the_script_goes_on(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    script = "dd if=/dev/zero of=/dev/null bs=200M; echo went on; exit 0"
    result = run(runtime, tmp_path, script, busybox, memory=32 * 1024**2)
    log = (tmp_path / "log").read_text()
    assert result.reason == "out of memory (limit 32Mi)", log
    assert result.cause is Cause.OOM
    assert "went on" in log
    assert re.fullmatch(KILLED, log.splitlines()[-1]), log


def test_a_job_that_used_all_its_memory_but_lost_no_process_is_not_out_of_memory(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    # 64 MiB read from disk fill a 32 MiB job's page cache to its limit, which the kernel
    # reclaims without killing anything.
    (tmp_path / "input").mkdir()
    with (tmp_path / "input" / "big").open("wb") as f:
        f.write(bytes(64 * 1024**2))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # not cached yet
    read = "cat /ondrop/input/big > /dev/null"
    ok = run(runtime, tmp_path, read, busybox, memory=32 * 1024**2)
    assert ok.ok, (tmp_path / "log").read_text()
    # Then it ends by a SIGKILL of its own: its exit status, not out of memory.
    (tmp_path / "log").unlink()
    with (tmp_path / "input" / "big").open("rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    killed = run(runtime, tmp_path, f"{read}; sh -c 'kill -KILL $$'", busybox, memory=32 * 1024**2)
    assert killed.reason == "exit status 137 (SIGKILL)", (tmp_path / "log").read_text()
    assert "[ondrop]" not in (tmp_path / "log").read_text()


def test_the_network_is_off_unless_the_service_asks(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    script = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"
    assert run(runtime, tmp_path, script, busybox).ok
    assert (tmp_path / "log").read_text().split() == ["lo"]
    (tmp_path / "log").unlink()
    refused = run(runtime, tmp_path, "nc -w 2 192.0.2.1 80 </dev/null", busybox)
    assert not refused.ok
    (tmp_path / "log").unlink()
    assert run(runtime, tmp_path, script, busybox, network=True).ok
    assert len((tmp_path / "log").read_text().split()) > 1


def test_the_image_is_read_only_and_tmp_and_outputs_are_writable(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert not run(runtime, tmp_path, "touch /etc/changed", busybox).ok
    assert run(runtime, tmp_path, 'touch /tmp/a "$HOME/b" /ondrop/output/c', busybox).ok
    assert (tmp_path / "output" / "c").exists()


def test_an_image_that_is_not_here_makes_the_job_wait_saying_so(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    result = run(runtime, tmp_path, "true", "localhost/ondrop-no-such-image:1")
    assert result.reason.startswith(
        f"image localhost/ondrop-no-such-image:1 is not in {runtime.engine.name}'s store and "
        "the pull policy is never"
    )
    assert result.reason.endswith("the job waits until it is here")
    assert result.cause is Cause.UNAVAILABLE  # not the job's fault: it waits, uncounted


def test_nothing_is_left_behind(runtime: ContainerRuntime, busybox: str, tmp_path: Path) -> None:
    run(runtime, tmp_path, "true", busybox, memory=16 * 1024**2)
    run(runtime, tmp_path, "sleep 30", busybox, timeout=0.5)
    assert runtime.engine.containers(runtime.prefix) == []
    if runtime.oci is not None:
        assert runtime.oci.containers(runtime.prefix) == []
    leftovers = subprocess.run(
        f"ls -d /sys/fs/cgroup/*/ondrop/{runtime.prefix}* "
        f"/sys/fs/cgroup/ondrop/{runtime.prefix}* 2>/dev/null",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout
    assert leftovers == ""


def test_the_bundle_asks_for_the_limits_and_no_added_capabilities(tmp_path: Path) -> None:
    config = bundle_config(
        rootfs=tmp_path,
        args=["/bin/sh"],
        env={"A": "1"},
        cwd="/work",
        binds=[Bind(tmp_path, "/in", readonly=True)],
        hostname="h",
        cgroups_path="/ondrop/x/job",
        cpu=0.5,
        pids=100,
    )
    assert config["root"] == {"path": str(tmp_path), "readonly": True}
    assert config["linux"]["resources"]["cpu"] == {"period": 100000, "quota": 50000}
    assert config["linux"]["resources"]["pids"] == {"limit": 100}
    assert {"type": "network"} in config["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" not in config["process"]["capabilities"]["bounding"]
    assert config["process"]["noNewPrivileges"] is True
    assert {
        "destination": "/in",
        "type": "bind",
        "source": str(tmp_path),
        "options": ["rbind", "nosuid", "nodev", "ro"],
    } in config["mounts"]


def test_multi_line_values_reach_the_script_whole(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    pem = "-----BEGIN KEY-----\nline two\n-----END KEY-----"
    result = run(
        runtime, tmp_path, 'printf "%s" "$PEM" > /ondrop/output/pem', busybox, env={"PEM": pem}
    )
    assert result.ok, (tmp_path / "log").read_text()
    assert (tmp_path / "output" / "pem").read_text() == pem


def test_an_image_whose_user_is_not_root_writes_its_outputs(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    image = "localhost/ondrop-test-nobody:1"
    if runtime.engine.image(image) is None:
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Containerfile").write_text(f"FROM {busybox}\nUSER 65534:65534\n")
        runtime.engine.build(tmp_path / "ctx", image)
    work = tmp_path / "work"
    work.mkdir()
    result = run(runtime, work, "id -u > /ondrop/output/uid; touch /tmp/scratch", image)
    assert result.ok, (work / "log").read_text()
    assert (work / "output" / "uid").read_text() == "65534\n"


def test_a_job_has_localhost_a_syscall_filter_and_dns_only_with_the_network(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert run(
        runtime, tmp_path, "grep -c localhost /etc/hosts; grep Seccomp: /proc/self/status", busybox
    ).ok
    count, seccomp = (tmp_path / "log").read_text().split("\n")[:2]
    assert int(count) >= 1
    assert seccomp.split()[-1] == "2"  # a filter is on, as under podman
    (tmp_path / "log").unlink()
    if runtime.engine.name != "docker":  # Docker writes one in, the network off or not
        assert (
            run(
                runtime, tmp_path, "cat /etc/resolv.conf 2>/dev/null | grep -c nameserver", busybox
            ).exit_code
            == 1
        )  # no name server without the network
        (tmp_path / "log").unlink()
    assert run(runtime, tmp_path, "grep -c nameserver /etc/resolv.conf", busybox, network=True).ok


def test_a_gpu_job_gets_its_device_files_and_no_others(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia3"
    os.mknod(fake, 0o600 | stat.S_IFCHR, os.makedev(195, 3))
    config = bundle_config(
        rootfs=tmp_path,
        args=["/bin/sh"],
        env={},
        cwd="/",
        binds=[],
        hostname="h",
        cgroups_path="/ondrop/x/job",
        devices=[fake],
    )
    assert config["linux"]["devices"] == [
        {
            "path": str(fake),
            "type": "c",
            "major": 195,
            "minor": 3,
            "fileMode": 0o666,
            "uid": 0,
            "gid": 0,
        }
    ]
    assert config["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 195, "minor": 3, "access": "rwm"},
    ]


def test_the_syscall_filter_allows_only_the_machines_own_abi(tmp_path: Path) -> None:
    import json
    import platform

    from ondrop.runtime.oci import ARCHES, seccomp_profile

    podman_like = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }  # fmt: skip
    (tmp_path / "seccomp.json").write_text(json.dumps(podman_like))
    profile = seccomp_profile(tmp_path / "seccomp.json")
    if platform.machine() not in ARCHES:
        assert profile is None
        return
    assert profile is not None
    assert profile["architectures"] == [ARCHES[platform.machine()][1]]
    assert profile["syscalls"] == [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]


def test_a_replica_serves_in_a_network_of_its_own_with_a_root_it_may_write(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    work = tmp_path / "replica"
    (work / "tmp").mkdir(parents=True)
    (work / "script").write_text(
        'echo "$GREETING" > /tmp/index.html; echo mine > /etc/motd\n'
        "cat /etc/motd >> /tmp/index.html\n"
        "exec httpd -f -p 8080 -h /tmp\n"
    )
    spec = RunSpec(
        job_id=f"exposed-test-{time.monotonic_ns()}",
        script=work / "script",
        workdir=work,
        env={"GREETING": "hello"},
        timeout=0,
        log=work / "log",
        image=busybox,
        memory=64 * 1024**2,
    )
    served = runtime.serve(spec)
    try:
        netns = os.open(f"/proc/{served.pid}/ns/net", os.O_RDONLY)
        try:
            assert os.fstat(netns).st_ino != os.stat("/proc/self/ns/net").st_ino

            def page() -> bytes:
                with socket_in(netns) as sock:
                    sock.settimeout(5)
                    try:
                        sock.connect(("127.0.0.1", 8080))
                    except OSError:
                        return b""
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return b"".join(iter(lambda: sock.recv(4096), b""))

            answer = wait_for(page, 60)
        finally:
            os.close(netns)
        assert answer.startswith(b"HTTP/1.") and answer.endswith(b"hello\nmine\n")
    finally:
        served.stop(5)
    assert not served.alive() and not work.exists()
    # The image's own root was never written: a job sees no /etc/motd of the replica's.
    assert run(runtime, tmp_path, "cat /etc/motd", busybox).exit_code != 0
