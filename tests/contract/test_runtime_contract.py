"""The Runtime contract: exit status, time limit, environment, logs and stop, on every
runtime: the process runtime, and the container runtime every way it starts containers
(the OCI runtime directly, and the engine's `run`, with podman and with Docker)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.jobs import Cause
from ondrop.runtime.base import RunResult, RunSpec, Runtime
from ondrop.runtime.process import Isolation, JobUsers, ProcessRuntime, interpreter_folders
from ondrop.runtime.spawner import Spawner
from tests.support.images import BUSYBOX_IMAGE, container_runtime
from tests.support.servers import unavailable
from tests.support.waiting import wait_for


@pytest.fixture(
    params=["process", "process-isolated", "container", "container-engine", "container-docker"]
)
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    if request.param == "process":
        yield ProcessRuntime()
        return
    if request.param == "process-isolated":  # as the platform runs it as root
        if os.geteuid() != 0:
            unavailable("the process runtime isolates jobs only as root")
        data = tmp_path_factory.mktemp("data")
        top = tmp_path_factory.getbasetemp()
        top.chmod(0o711)  # the tests' work folders lie below: job users pass through
        show = [top, *interpreter_folders()]
        isolated = ProcessRuntime(Isolation(Spawner([data], show), JobUsers(2100000100, 16)))
        yield isolated
        isolated.close()
        return
    engine = "docker" if request.param == "container-docker" else "podman"  # docker: its CLI
    folder = tmp_path_factory.mktemp("images")
    runtime = container_runtime(engine, folder, oci=request.param == "container")
    runtime.test_image = BUSYBOX_IMAGE  # type: ignore[attr-defined]
    yield runtime
    runtime.clean()


def spec(runtime: Runtime, work: Path, script: str, timeout: float = 10, **env: str) -> RunSpec:
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir(exist_ok=True)
    (work / "script").write_text(script)
    return RunSpec(
        job_id=f"job-{time.monotonic_ns()}",
        script=work / "script",
        workdir=work,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=timeout,
        log=work / "log",
        image=getattr(runtime, "test_image", ""),
    )


def test_a_zero_exit_succeeds_and_its_output_is_logged(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(
        spec(runtime, tmp_path, 'echo "out $GREETING"; echo err >&2', GREETING="hi")
    )
    assert result.ok and result.exit_code == 0, (tmp_path / "log").read_text()
    assert (tmp_path / "log").read_text().splitlines() == ["out hi", "err"]


def test_a_non_zero_exit_fails_with_the_status(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(runtime, tmp_path, "exit 3"))
    assert not result.ok
    assert (result.exit_code, result.reason) == (3, "exit status 3")


def test_a_shebang_picks_the_interpreter(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(runtime, tmp_path, "#!/bin/sh -e\necho $((6 * 7))\nfalse\necho no\n"))
    assert (tmp_path / "log").read_text() == "42\n"
    assert result.exit_code == 1  # -e from the shebang line stopped it


def test_the_script_reads_its_input_and_writes_outputs_where_it_is_told(
    runtime: Runtime, tmp_path: Path
) -> None:
    job = spec(runtime, tmp_path, 'tr a-z A-Z < "$IN" > "$OUT/shout.txt"')
    (tmp_path / "input" / "words.txt").write_text("quiet words\n")
    job = RunSpec(
        **{
            **job.__dict__,
            "env": {
                **job.env,
                "IN": runtime.inside(tmp_path, tmp_path / "input" / "words.txt"),
                "OUT": runtime.inside(tmp_path, tmp_path / "output"),
            },
        }
    )
    assert runtime.run(job).ok, (tmp_path / "log").read_text()
    assert (tmp_path / "output" / "shout.txt").read_text() == "QUIET WORDS\n"


def test_the_time_limit_kills_the_script_and_its_children(runtime: Runtime, tmp_path: Path) -> None:
    job = spec(runtime, tmp_path, "", timeout=0.5)
    marker = runtime.inside(tmp_path, tmp_path / "tmp" / "child-alive")
    job.script.write_text(f"(sleep 2; touch {marker}) &\nsleep 30\n")
    started = time.monotonic()
    result = runtime.run(job)
    assert time.monotonic() - started < 8
    assert (result.exit_code, result.reason) == (None, "timed out after 0.5 s")
    assert result.cause is Cause.TIMEOUT
    time.sleep(2.5)
    assert not (tmp_path / "tmp" / "child-alive").exists(), "a child outlived the job"


def test_a_signal_is_reported_by_name(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(runtime, tmp_path, "sh -c 'kill -KILL $$'"))
    assert result.reason == "exit status 137 (SIGKILL)"
    assert result.cause is Cause.EXIT


def test_stop_interrupts_a_running_job(runtime: Runtime, tmp_path: Path) -> None:
    job = spec(runtime, tmp_path, "echo started; sleep 600", timeout=600)
    results: list[RunResult] = []
    running = threading.Thread(target=lambda: results.append(runtime.run(job)), daemon=True)
    running.start()
    log = tmp_path / "log"
    wait_for(lambda: log.exists() and "started" in log.read_text(errors="replace"), timeout=120)
    runtime.stop(job.job_id)
    wait_for(lambda: not running.is_alive(), timeout=120)  # long before the sleep's end
    (result,) = results
    assert result.interrupted and not result.ok
