"""Warm containers: jobs of a service share one, one at a time, and see nothing of the
jobs before them; a container is given up when a job leaves a process behind, times
out or runs out of memory, and removed when idle too long or at shutdown."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.container import ContainerRuntime
from tests.runtime.test_container import KILLED
from tests.support.images import container_runtime
from tests.support.waiting import wait_for


@pytest.fixture
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerRuntime]:
    runtime = container_runtime("podman", tmp_path_factory.mktemp("img"), oci=True)
    yield runtime
    runtime.close()
    runtime.clean()


def job(
    runtime: ContainerRuntime, work: Path, script: str, image: str, **options: object
) -> RunResult:
    """Run `script` as a job of service `s` with warm containers kept 30 s, in `work`."""
    work.mkdir()
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir()
    (work / "input" / "in.txt").write_text(work.name)
    (work / "script").write_text(script)
    spec = RunSpec(
        job_id=f"job-{time.monotonic_ns()}",
        script=work / "script",
        workdir=work,
        env={"INPUT_FILE_PATH": "/ondrop/input/in.txt"},
        timeout=20,
        log=work / "log",
        image=image,
        service="s",
        warm=30.0,
    )
    return runtime.run(RunSpec(**{**spec.__dict__, **options}))


def containers(runtime: ContainerRuntime) -> list[str]:
    assert runtime.oci is not None
    return runtime.oci.containers(runtime.prefix)


LEAVE = (
    "hostname > /ondrop/output/host; cat $INPUT_FILE_PATH > /ondrop/output/in; "
    "echo x > /tmp/left; echo x > /dev/shm/left; echo x > /run/left; echo x > /ondrop/left"
)
LOOK = (
    "hostname > /ondrop/output/host; cat $INPUT_FILE_PATH > /ondrop/output/in; "
    "ls -A /tmp /dev/shm /run /ondrop > /ondrop/output/seen"
)


def test_jobs_share_a_warm_container_and_see_nothing_of_each_other(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    first = job(runtime, tmp_path / "a", LEAVE, busybox)
    assert first.ok, (tmp_path / "a" / "log").read_text()
    assert runtime.warm is not None and runtime.warm.count() == 1
    second = job(runtime, tmp_path / "b", LOOK, busybox)
    assert second.ok, (tmp_path / "b" / "log").read_text()
    a, b = tmp_path / "a" / "output", tmp_path / "b" / "output"
    assert (a / "host").read_text() == (b / "host").read_text()  # the same container
    assert ((a / "in").read_text(), (b / "in").read_text()) == ("a", "b")
    seen = (b / "seen").read_text().split()
    assert sorted(seen) == ["/dev/shm:", "/ondrop:", "/run:", "/tmp:", "input", "output", "script"]
    assert len(containers(runtime)) == 1
    assert not job(runtime, tmp_path / "c", "touch /dev/made", busybox).ok  # /dev is read-only


def test_a_job_that_leaves_a_process_behind_takes_its_container_with_it(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert job(runtime, tmp_path / "a", "hostname > /ondrop/output/host; sleep 60 &", busybox).ok
    assert runtime.warm is not None and runtime.warm.count() == 0
    assert containers(runtime) == []
    assert job(runtime, tmp_path / "b", "hostname > /ondrop/output/host", busybox).ok
    host = (tmp_path / "{}" / "output" / "host").as_posix()
    assert Path(host.format("a")).read_text() != Path(host.format("b")).read_text()


def test_a_job_cannot_reach_the_host_or_the_first_process(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    # The output folder swapped for a link to the host's /etc: nothing of /etc comes back.
    swap = "rmdir /ondrop/output && ln -s /etc /ondrop/output"
    assert job(runtime, tmp_path / "a", swap, busybox).ok, (tmp_path / "a" / "log").read_text()
    output = tmp_path / "a" / "output"
    assert output.is_dir() and not output.is_symlink() and list(output.iterdir()) == []
    # The first process is another user's, which a job (root or not) cannot trace.
    peek = job(runtime, tmp_path / "b", "cat /proc/1/environ", busybox)
    assert not peek.ok and "Permission denied" in (tmp_path / "b" / "log").read_text()
    assert job(runtime, tmp_path / "c", "true", busybox).ok


def test_a_timeout_or_an_out_of_memory_kill_gives_the_container_up(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert job(runtime, tmp_path / "warmup", "true", busybox, timeout=0.5).ok
    slow = job(runtime, tmp_path / "slow", "sleep 30", busybox, timeout=0.5)
    assert slow.reason == "timed out after 0.5 s"
    assert containers(runtime) == []
    big = job(runtime, tmp_path / "big", "tail /dev/zero", busybox, memory=32 * 1024**2)
    assert big.reason == "out of memory (limit 32Mi)"
    assert containers(runtime) == []
    small = job(runtime, tmp_path / "small", "head -c 100000 /dev/zero | wc -c", busybox)
    assert small.ok


def test_a_process_killed_for_memory_fails_the_job_and_gives_the_container_up(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    script = "dd if=/dev/zero of=/dev/null bs=200M; echo went on; exit 0"
    big = job(runtime, tmp_path / "big", script, busybox, memory=32 * 1024**2)
    log = (tmp_path / "big" / "log").read_text()
    assert big.reason == "out of memory (limit 32Mi)", log
    assert "went on" in log
    assert re.fullmatch(KILLED, log.splitlines()[-1]), log
    assert containers(runtime) == []
    assert job(runtime, tmp_path / "next", "true", busybox, memory=32 * 1024**2).ok


def test_an_idle_warm_container_is_removed_after_its_time_and_at_close(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert job(runtime, tmp_path / "a", "true", busybox, warm=0.5).ok
    assert len(containers(runtime)) == 1
    deadline = time.monotonic() + 10
    while containers(runtime) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers(runtime) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("warm-")]  # its folder too
    assert job(runtime, tmp_path / "b", "true", busybox).ok
    assert len(containers(runtime)) == 1
    runtime.close()
    assert containers(runtime) == []


def test_containers_kept_ready_are_started_replaced_and_let_go(
    runtime: ContainerRuntime, busybox: str, tmp_path: Path
) -> None:
    assert runtime.warm is not None and runtime.oci is not None
    (tmp_path / "first").mkdir()
    ready = RunSpec(
        job_id="ready-s",
        script=tmp_path / "ready" / "script",
        workdir=tmp_path / "ready",
        env={},
        timeout=20,
        log=tmp_path / "ready" / "log",
        image=busybox,
        service="s",
        warm=0.5,
    )
    assert runtime.keep_ready(ready, 2) is None
    warm = runtime.warm
    wait_for(lambda: len(containers(runtime)) == 2 and warm.count() == 2)
    kept = set(containers(runtime))
    # A job of the service runs in one of them (it was not started for the job), and the
    # two stay, idle longer than `warm`.
    assert job(runtime, tmp_path / "a", "hostname > /ondrop/output/host", busybox, warm=0.5).ok
    host = (tmp_path / "a" / "output" / "host").read_text().strip()
    assert host in {name.removeprefix(runtime.prefix) for name in kept}, (host, kept)
    time.sleep(1.0)  # past `warm`: an idle container not kept ready would be gone
    assert set(containers(runtime)) == kept
    # One a job takes with it (a process left behind) is replaced.
    assert job(runtime, tmp_path / "b", "sleep 60 &", busybox, warm=0.5).ok
    wait_for(lambda: len(containers(runtime)) == 2 and set(containers(runtime)) != kept)
    # One killed from outside is replaced too.
    victim = containers(runtime)[0]
    runtime.oci.kill(victim)
    wait_for(lambda: victim not in containers(runtime) and len(containers(runtime)) == 2)
    # Kept none: the idle ones go after `warm` seconds.
    assert runtime.keep_ready(ready, 0) is None
    wait_for(lambda: containers(runtime) == [])


def test_a_container_kept_ready_of_an_image_not_here_says_so(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    ready = RunSpec("ready-s", tmp_path / "s", tmp_path / "r", {}, 20, tmp_path / "l")
    problem = runtime.keep_ready(replace(ready, image="localhost/not-here:1", service="s"), 1)
    assert problem is not None and "localhost/not-here:1" in problem
    assert containers(runtime) == []
