"""The Runtime contract: exit status, time limit, environment, logs and stop, on every
runtime that can run here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.runtime.base import RunSpec, Runtime
from ondrop.runtime.process import ProcessRuntime


@pytest.fixture(params=["process"])
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    yield ProcessRuntime()


def spec(tmp_path: Path, script: str, timeout: float = 10, **env: str) -> RunSpec:
    (tmp_path / "script").write_text(script)
    return RunSpec(
        job_id=f"job-{time.monotonic_ns()}",
        script=tmp_path / "script",
        workdir=tmp_path,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=timeout,
        log=tmp_path / "log",
    )


def test_a_zero_exit_succeeds_and_its_output_is_logged(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(tmp_path, 'echo "out $GREETING"; echo err >&2', GREETING="hi"))
    assert result.ok and result.exit_code == 0
    assert (tmp_path / "log").read_text().splitlines() == ["out hi", "err"]


def test_a_non_zero_exit_fails_with_the_status(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(tmp_path, "exit 3"))
    assert not result.ok
    assert (result.exit_code, result.reason) == (3, "exit status 3")


def test_a_shebang_picks_the_interpreter(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(
        spec(
            tmp_path, "#!/usr/bin/env python3\nprint(6 * 7)\n", PATH="/usr/local/bin:/usr/bin:/bin"
        )
    )
    assert result.ok, (tmp_path / "log").read_text()
    assert (tmp_path / "log").read_text() == "42\n"


def test_the_time_limit_kills_the_script_and_its_children(runtime: Runtime, tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    started = time.monotonic()
    result = runtime.run(spec(tmp_path, f"(sleep 3; touch {marker}) &\nsleep 30\n", timeout=0.5))
    assert time.monotonic() - started < 5
    assert (result.exit_code, result.reason) == (None, "timed out after 0.5 s")
    time.sleep(3.5)
    assert not marker.exists(), "a child of the script outlived the job"


def test_a_signal_is_reported_by_name(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(spec(tmp_path, "kill -KILL $$"))
    assert result.reason == "killed by SIGKILL"


def test_stop_interrupts_a_running_job(runtime: Runtime, tmp_path: Path) -> None:
    job = spec(tmp_path, "sleep 30")
    threading.Timer(0.3, runtime.stop, args=(job.job_id,)).start()
    started = time.monotonic()
    result = runtime.run(job)
    assert time.monotonic() - started < 5
    assert result.interrupted and not result.ok
