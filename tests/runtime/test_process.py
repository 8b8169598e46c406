"""The process runtime as root: each job a user of its own, started by the spawner."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.process import (
    SPAWNER_DIED,
    Isolation,
    JobUsers,
    ProcessRuntime,
    interpreter_folders,
)
from ondrop.runtime.spawner import Spawner
from tests.support.servers import unavailable
from tests.support.waiting import processes_with, spawners_of, wait_for


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[ProcessRuntime]:
    if os.geteuid() != 0:
        unavailable("the process runtime isolates jobs only as root")
    data = tmp_path / "data"
    (data / "work").mkdir(parents=True)
    spawner = Spawner([data], [data / "work", *interpreter_folders()])
    runtime = ProcessRuntime(Isolation(spawner, JobUsers(2100000200, 4)))
    yield runtime
    runtime.close()


def job(data: Path, script: str, timeout: float = 30) -> RunSpec:
    work = data / "work" / f"job-{time.monotonic_ns()}"
    for part in ("input", "output", "tmp"):
        (work / part).mkdir(parents=True)
    (work / "script").write_text(script)
    return RunSpec(f"job-{time.monotonic_ns()}", work / "script", work, {}, timeout, work / "log")


def test_a_job_whose_spawner_dies_is_killed_with_what_it_started_and_runs_again(
    isolated: ProcessRuntime, tmp_path: Path
) -> None:
    marker = f"ondrop-orphan-{os.getpid()}-{time.monotonic_ns()}"
    spec = job(tmp_path / "data", f"setsid -f bash -c 'exec -a {marker} sleep 300'\nsleep 300\n")
    results: list[RunResult] = []
    runner = threading.Thread(target=lambda: results.append(isolated.run(spec)))
    runner.start()
    wait_for(lambda: processes_with(marker))
    (spawner,) = spawners_of(tmp_path / "data")
    os.kill(spawner, signal.SIGKILL)
    runner.join(30)
    assert results and results[0].interrupted and results[0].reason == SPAWNER_DIED
    wait_for(lambda: not processes_with(marker))  # a new spawner killed its user's processes
    # The user is free again, and the next job runs.
    again = isolated.run(job(tmp_path / "data", "id -u\n"))
    assert again.ok


def test_every_running_job_has_a_user_of_its_own_and_none_runs_as_a_used_one(
    isolated: ProcessRuntime, tmp_path: Path
) -> None:
    hold = "id -u > output/uid\nwhile [ ! -e tmp/go ]; do sleep 0.05; done\n"
    specs = [job(tmp_path / "data", hold) for _ in range(4)]
    results: list[RunResult] = []
    threads = [threading.Thread(target=lambda s=s: results.append(isolated.run(s))) for s in specs]
    for thread in threads:
        thread.start()
    done = [s.workdir / "output" / "uid" for s in specs]
    wait_for(lambda: all(path.exists() and path.read_text() for path in done))
    fifth = isolated.run(job(tmp_path / "data", "true\n"))  # all 4 job users are taken
    assert not fifth.ok and "every job uid (2100000200-2100000203) is in use" in fifth.reason
    uids = {int(path.read_text()) for path in done}
    for spec in specs:
        (spec.workdir / "tmp" / "go").write_text("")
    for thread in threads:
        thread.join(60)
    assert [r.ok for r in results] == [True] * 4
    assert uids == set(range(2100000200, 2100000204))


def test_a_runtime_that_cannot_isolate_says_so_and_runs_no_job(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("the process runtime isolates jobs only as root")
    data = tmp_path / "data"
    (data / "work").mkdir(parents=True)
    # A folder to show that does not exist: the spawner cannot set up its namespace.
    spawner = Spawner([data], [data / "work", tmp_path / "missing"])
    runtime = ProcessRuntime(Isolation(spawner, JobUsers(2100000300, 2)))
    runtime.clean()  # at start
    assert runtime.describe().startswith("cannot isolate jobs, so none runs: ")
    assert "cannot start the job spawner" in runtime.describe()
    result = runtime.run(job(data, "touch ran\n"))
    assert not result.ok and "cannot be isolated" in result.reason
    assert not list((data / "work").glob("*/ran"))
    runtime.close()


@pytest.mark.parametrize("isolation", ["plain", "isolated"])
def test_a_stop_that_comes_while_the_job_starts_stops_it(
    isolation: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    runtime = request.getfixturevalue("isolated") if isolation == "isolated" else ProcessRuntime()
    (tmp_path / "data" / "work").mkdir(parents=True, exist_ok=True)
    spec = job(tmp_path / "data", "sleep 300\n", timeout=600)
    # The stop comes once the process exists but before run() knows it: the window a
    # cancel right after a claim can fall into.
    if runtime.isolation is None:
        real_popen = subprocess.Popen

        def popen(*args: Any, **kwargs: Any) -> Any:
            started = real_popen(*args, **kwargs)
            runtime.stop(spec.job_id)
            return started

        with patch("subprocess.Popen", popen):
            result = runtime.run(spec)
    else:
        real_start = runtime.isolation.spawner.start

        def start(*args: Any, **kwargs: Any) -> Any:
            started = real_start(*args, **kwargs)
            runtime.stop(spec.job_id)
            return started

        with patch.object(runtime.isolation.spawner, "start", start):
            result = runtime.run(spec)
    assert result.interrupted and not result.ok  # long before the sleep's end
