"""The Backend contract: a submitted JobSpec ends in exactly one Report of that attempt,
saying how it ended and on which node, with its outputs; cancel and stop_all stop running
jobs, whose reports then say so. Run on every backend: the local one (threads here, the
real supervisor and process runtime), the Ray backend on a real loopback cluster (the
batch tasks and the nodes' faas supervisors), and the stub the control plane's tests use."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ondrop.backends.base import Backend
from ondrop.backends.local import LocalBackend
from ondrop.backends.ray import RayBackend, RayCluster
from ondrop.backends.stub import StubBackend
from ondrop.backends.transit import Transit
from ondrop.events.base import object_event
from ondrop.events.payloads import Payloads
from ondrop.fdl.models import Service
from ondrop.jobs import Cause, JobSpec, ObjectRef, Report, Resources, Staged
from ondrop.runtime.process import ProcessRuntime
from ondrop.storage import LocalStorage, Providers
from ondrop.store.base import FAILED, INTERRUPTED, SUCCEEDED, Outcome
from ondrop.supervisor import Folders, Supervisor
from tests.support.waiting import wait_for


class Recorder:
    """The backend's listener: what it was told, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: list[Report] = []
        self.script_ended: list[str] = []
        self.order: list[tuple[str, str]] = []

    def script_ended_(self, job_id: str) -> None:
        with self.lock:
            self.script_ended.append(job_id)
            self.order.append(("script_ended", job_id))

    def ended(self, report: Report) -> None:
        with self.lock:
            self.reports.append(report)
            self.order.append(("ended", report.job_id))

    def report(self, job_id: str) -> Report:
        def found() -> Report | None:
            with self.lock:
                return next((r for r in self.reports if r.job_id == job_id), None)

        report: Report = wait_for(found)
        return report


class Listening:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def script_ended(self, job_id: str) -> None:
        self.recorder.script_ended_(job_id)

    def ended(self, report: Report) -> None:
        self.recorder.ended(report)


def stub_execute(stub: StubBackend, spec: JobSpec, script_ended: Callable[[], None]) -> Outcome:
    """The stub's stand-in for a script: `sleep` waits until stopped, `exit N` fails."""
    script = spec.service.script.strip()
    if "sleep" in script and stub.stopping[spec.job_id].wait(30):
        return Outcome(INTERRUPTED, None, "stopped by the platform", cause=Cause.STOPPED)
    if match := re.fullmatch(r"exit (\d+)", script):
        code = int(match[1])
        return Outcome(FAILED, code, f"exit status {code}", cause=Cause.EXIT)
    script_ended()
    return Outcome(SUCCEEDED, 0, node="stub")


@pytest.fixture(params=["local", "ray-batch", "ray-faas", "stub"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Recorder]]:
    global MARKS
    recorder = Recorder()
    # Input and marks where every node reaches them, and every job user may write marks
    # (the nodes' jobs run as users of their own; pytest's folders are the root's alone).
    shared = Path(tempfile.mkdtemp(prefix="ondrop-contract-", dir="/tmp"))
    shared.chmod(0o755)
    (shared / "in").mkdir(mode=0o755)
    (shared / "in" / "a.txt").write_text("hello")
    (shared / "in" / "a.txt").chmod(0o644)
    MARKS = shared / "marks"
    MARKS.mkdir()
    MARKS.chmod(0o777)
    made: Backend
    cluster: RayCluster | None = None
    if request.param == "local":
        runtime = ProcessRuntime()
        supervisor = Supervisor(
            NoLedger(),
            Providers({PROVIDER: LocalStorage(PROVIDER, shared)}),
            lambda service: runtime,
            Folders(tmp_path / "work", tmp_path / "results"),
            Payloads(tmp_path / "payloads"),
        )
        made = LocalBackend(supervisor, [runtime])
    elif request.param.startswith("ray"):
        cluster, configs = request.getfixturevalue("ray_plane")
        configs[PROVIDER] = {"path": str(shared), "shared": True}
        transit = Transit(None, Payloads(tmp_path / "payloads"), tmp_path / "results")
        made = RayBackend(request.param.removeprefix("ray-"), cluster, transit)
    else:
        stub = StubBackend(lambda spec, ended: stub_execute(stub, spec, ended))
        made = stub
    made.start(Listening(recorder))
    if cluster is not None:
        wait_for(lambda: cluster.problem() is None, timeout=120)
    yield made, recorder
    made.stop_all(force=True)
    made.close()
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_plane(ray_cluster: Any) -> Iterator[tuple[RayCluster, dict[str, dict[str, Any]]]]:
    """One connection of this process to the test cluster, for the module (Ray does not
    take a second ray.init in a process after a shutdown), and the providers' configs the
    nodes get, which each test sets."""
    configs: dict[str, dict[str, Any]] = {}
    cluster = RayCluster(ray_cluster.address, NoLedger(), lambda: configs)
    yield cluster, configs
    cluster.close()


PROVIDER = "local.contract"
MARKS = Path("/nonexistent")  # the folder each sleeper marks when it has started


class NoLedger:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    def record_output(self, source: str, key: str, job_id: str, attempt: int | None = None) -> None:
        self.recorded.append((source, key, job_id))


def job(script: str, attempt: int = 1) -> JobSpec:
    definition = {
        "name": "svc",
        "script": script,
        "input": [{"storage_provider": PROVIDER, "path": "in"}],
        "environment": {"variables": {"MARKS": str(MARKS)}},
    }
    event = object_event(PROVIDER, "in/a.txt", "v1", 5)
    return JobSpec(
        job_id=f"job-{time.monotonic_ns()}",
        attempt=attempt,
        pool="faas",
        service=Service.model_validate(definition),
        event=event,
        resources=Resources(timeout=60.0),
        inputs=(Staged(ObjectRef(PROVIDER, "in/a.txt"), "a.txt"),),
    )


def test_a_job_ends_in_one_report_of_its_attempt_naming_its_node(
    backend: tuple[Backend, Recorder],
) -> None:
    made, recorder = backend
    spec = job('cat "$INPUT_FILE_PATH" > /dev/null', attempt=3)
    handle = made.submit(spec)
    assert isinstance(handle, str) and handle
    report = recorder.report(spec.job_id)
    assert report.attempt == 3
    assert report.outcome.status == SUCCEEDED, report.outcome.log
    assert report.outcome.node
    time.sleep(0.2)  # a second report would have come by now
    assert [r.job_id for r in recorder.reports] == [spec.job_id]


def test_a_failing_script_reports_its_exit_as_the_cause(backend: tuple[Backend, Recorder]) -> None:
    made, recorder = backend
    spec = job("exit 3")
    made.submit(spec)
    outcome = recorder.report(spec.job_id).outcome
    assert (outcome.status, outcome.exit_code, outcome.cause) == (FAILED, 3, Cause.EXIT)


def test_script_ended_if_told_comes_before_the_report(backend: tuple[Backend, Recorder]) -> None:
    made, recorder = backend
    spec = job("true")
    made.submit(spec)
    recorder.report(spec.job_id)
    events = [e for e in recorder.order if e[1] == spec.job_id]
    assert events[-1] == ("ended", spec.job_id)
    assert events.count(("script_ended", spec.job_id)) <= 1


def test_cancel_stops_a_running_job_and_its_report_says_stopped(
    backend: tuple[Backend, Recorder], tmp_path: Path
) -> None:
    made, recorder = backend
    spec = job(SLEEPER)
    made.submit(spec)
    running_for = time.monotonic()
    wait_for(lambda: started(made, tmp_path) == 1)
    made.cancel(spec.job_id)
    outcome = recorder.report(spec.job_id).outcome
    assert outcome.status == INTERRUPTED and outcome.cause is Cause.STOPPED
    assert time.monotonic() - running_for < 30


def test_stop_all_stops_every_running_job(
    backend: tuple[Backend, Recorder], tmp_path: Path
) -> None:
    made, recorder = backend
    specs = [job(SLEEPER) for _ in range(3)]
    for spec in specs:
        made.submit(spec)
    wait_for(lambda: started(made, tmp_path) == 3)
    made.stop_all(force=True)
    for spec in specs:
        assert recorder.report(spec.job_id).outcome.cause is Cause.STOPPED


def test_many_jobs_at_once_each_report_once(backend: tuple[Backend, Recorder]) -> None:
    made, recorder = backend
    specs = [job("true") for _ in range(20)]
    for spec in specs:
        made.submit(spec)
    for spec in specs:
        assert recorder.report(spec.job_id).outcome.status == SUCCEEDED
    assert sorted(r.job_id for r in recorder.reports) == sorted(s.job_id for s in specs)


SLEEPER = 'touch "$MARKS/$JOB_UUID"; sleep 30'


def started(made: Backend, tmp_path: Path) -> int:
    """How many sleepers run now (so that a stop reaches their scripts, not staging)."""
    if isinstance(made, StubBackend):
        return len(made.stopping)
    return len(list(MARKS.iterdir()))


def test_the_ray_ledger_relay_lives_on_the_head_node(
    ray_plane: tuple[RayCluster, dict[str, dict[str, Any]]],
) -> None:
    """Not on a worker node, which the autoscaler may take away or a fault may lose with
    every output record in flight; and not on whichever node the control plane happens
    to share a machine with."""
    import ray

    cluster, _ = ray_plane
    cluster.start()
    wait_for(lambda: cluster.problem() is None, timeout=120)
    heads = [n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"]]
    assert cluster.relay_node() in heads
