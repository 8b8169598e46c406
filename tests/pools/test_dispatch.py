"""The local pool: runs what is queued within the limits, retries, and stops cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ondrop.backends.stub import StubBackend
from ondrop.events.base import object_event
from ondrop.fdl.models import Service
from ondrop.jobs import Cause, JobSpec
from ondrop.pools import policy
from ondrop.pools.base import Slots
from ondrop.pools.dispatch import Dispatcher
from ondrop.pools.faas import FaasLimits
from ondrop.pools.waiters import Waiters
from ondrop.services import Services
from ondrop.storage import LocalStorage, Providers
from ondrop.store.base import (
    FAILED,
    INTERRUPTED,
    QUEUED,
    SUCCEEDED,
    Claim,
    NewJob,
    Outcome,
)
from ondrop.store.sqlite import SQLiteStore
from tests.support.stored import saved


def make_pool(
    store: SQLiteStore,
    services: Services,
    execute: Callable[[Claim, Service], Outcome],
    waiters: Waiters,
    workers: int,
) -> Dispatcher:
    """A faas pool of `workers` slots running `execute` on the stub backend."""
    return Dispatcher(
        store,
        services,
        FaasLimits(workers, 900.0, 1024**3),
        StubBackend(lambda spec, ended: execute(claim_of(store, spec), spec.service)),
        waiters,
        Slots(workers),
    )


def claim_of(store: SQLiteStore, spec: JobSpec) -> Claim:
    job = store.job(spec.job_id)
    assert job is not None
    return Claim(job, spec.attempt, spec.event)


class Rig:
    def __init__(
        self, tmp_path: Path, execute: Callable[[Claim, Service], Outcome], workers: int = 2
    ) -> None:
        self.store = SQLiteStore(tmp_path / "s.db")
        storage = LocalStorage("local.default", tmp_path / "storage")
        self.services = Services(
            self.store, Providers({"local.default": storage}), lambda s: (None, None)
        )
        self.waiters = Waiters(self.store)
        self.pool = make_pool(self.store, self.services, execute, self.waiters, workers)

    def add(self, service: str, n: int) -> list[str]:
        ids = []
        saved(self.store, service)
        for i in range(n):
            event = object_event("local.default", f"{service}/{i}", "1", 1)
            (job,) = self.store.add_event(event, [NewJob(f"{service}-{i}", service)])
            ids.append(job.id)
        self.pool.wake()
        return ids

    def wait_done(self, timeout: float = 10) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.store.count_jobs()
            if not counts.get(QUEUED) and not counts.get("running"):
                return counts
            time.sleep(0.02)
        raise AssertionError(f"jobs still pending: {self.store.count_jobs()}")


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(
        execute: Callable[[Claim, Service], Outcome], workers: int = 2, **service: Any
    ) -> Rig:
        rig = Rig(tmp_path, execute, workers)
        rig.services.apply(
            [
                Service.model_validate({"name": "a", "script": "true", **service}),
                Service.model_validate({"name": "b", "script": "true"}),
            ]
        )
        rig.pool.start()
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.pool.stop(1.0, lambda: None)


def test_every_queued_job_runs_once(make: Callable[..., Rig]) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def execute(claim: Claim, service: Service) -> Outcome:
        with lock:
            seen.append(claim.job.id)
        return Outcome(SUCCEEDED, 0)

    rig = make(execute)
    ids = rig.add("a", 50)
    assert rig.wait_done() == {SUCCEEDED: 50}
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize(
    "cap",
    [{"max_concurrency": 1}, {"synchronous": {"max_scale": 1}}],
    ids=["max_concurrency", "max_scale"],
)
def test_no_more_than_the_workers_and_the_services_cap_run_at_once(
    make: Callable[..., Rig], cap: dict[str, Any]
) -> None:
    running: dict[str, int] = {"a": 0, "b": 0, "total": 0}
    peak: dict[str, int] = {"a": 0, "b": 0, "total": 0}
    lock = threading.Lock()

    def execute(claim: Claim, service: Service) -> Outcome:
        with lock:
            for k in (service.name, "total"):
                running[k] += 1
                peak[k] = max(peak[k], running[k])
        time.sleep(0.02)
        with lock:
            for k in (service.name, "total"):
                running[k] -= 1
        return Outcome(SUCCEEDED, 0)

    rig = make(execute, workers=3, **cap)
    rig.add("a", 10)
    rig.add("b", 10)
    rig.wait_done()
    assert peak["total"] == 3
    assert peak["a"] == 1


def test_the_next_script_starts_while_the_last_outputs_are_stored(tmp_path: Path) -> None:
    """A slot is a running script: a job storing its outputs lets the next one start, with
    at most as many jobs again finishing behind the running ones."""
    started: list[str] = []
    storing = threading.Event()

    def execute(spec: JobSpec, ended: Callable[[], None]) -> Outcome:
        started.append(spec.job_id)
        ended()  # the script is over: now its outputs are stored, until `storing` is set
        storing.wait(10)
        return Outcome(SUCCEEDED, 0)

    rig = Rig(tmp_path, lambda claim, service: Outcome(SUCCEEDED, 0), workers=1)
    rig.pool = Dispatcher(
        rig.store,
        rig.services,
        FaasLimits(1, 900.0, 1024**3),
        StubBackend(execute),
        rig.waiters,
        Slots(1),
    )
    rig.services.apply([Service.model_validate({"name": "a", "script": "true"})])
    rig.pool.start()
    try:
        rig.add("a", 5)
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(started) == 2  # one slot: one storing, one more, and no third
        storing.set()
        assert rig.wait_done() == {SUCCEEDED: 5}
    finally:
        storing.set()
        rig.pool.stop(1.0, lambda: None)


def test_a_small_service_is_not_stuck_behind_a_big_backlog(make: Callable[..., Rig]) -> None:
    order: list[str] = []

    def execute(claim: Claim, service: Service) -> Outcome:
        order.append(service.name)
        time.sleep(0.005)
        return Outcome(SUCCEEDED, 0)

    rig = make(execute, workers=1)
    rig.pool.stop(1.0, lambda: None)  # queue everything first, then start a fresh pool
    rig.add("a", 40)
    rig.add("b", 1)
    rig.pool = make_pool(rig.store, rig.services, execute, rig.waiters, 1)
    rig.pool.start()
    rig.wait_done()
    assert order.index("b") <= 2


def test_a_failed_attempt_is_retried_per_the_service_then_succeeds(
    make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "backoff", lambda attempt: 0.01)

    def execute(claim: Claim, service: Service) -> Outcome:
        return Outcome(SUCCEEDED, 0) if claim.attempt == 3 else Outcome(FAILED, 1, "exit 1")

    rig = make(execute, retries=2)
    (job_id,) = rig.add("a", 1)
    assert rig.wait_done() == {SUCCEEDED: 1}
    assert [a.status for a in rig.store.attempts(job_id)] == [FAILED, FAILED, SUCCEEDED]


def test_without_retries_a_failure_is_final_and_kept_with_its_reason(
    make: Callable[..., Rig],
) -> None:
    rig = make(lambda c, s: Outcome(FAILED, 2, "exit status 2", "boom"))
    (job_id,) = rig.add("a", 1)
    assert rig.wait_done() == {FAILED: 1}
    job = rig.store.job(job_id)
    assert job is not None and (job.reason, job.exit_code) == ("exit status 2", 2)


def test_a_crashing_supervisor_fails_the_attempt_instead_of_the_pool(
    make: Callable[..., Rig],
) -> None:
    def execute(claim: Claim, service: Service) -> Outcome:
        raise RuntimeError("bug")

    rig = make(execute)
    rig.add("a", 2)
    assert rig.wait_done() == {FAILED: 2}
    assert all(j.reason == "internal error: bug" for j in rig.store.jobs("a"))


def test_watch_resolves_when_the_job_has_finished(make: Callable[..., Rig]) -> None:
    gate = threading.Event()

    def execute(claim: Claim, service: Service) -> Outcome:
        gate.wait(5)
        return Outcome(SUCCEEDED, 0)

    rig = make(execute)
    (job_id,) = rig.add("a", 1)
    future = rig.waiters.watch(job_id)
    assert not future.done()
    gate.set()
    assert future.result(5).status == SUCCEEDED
    assert rig.waiters.watch(job_id).result(1).status == SUCCEEDED  # already finished


def test_stop_interrupts_jobs_past_the_grace_and_queues_them_again(tmp_path: Path) -> None:
    release = threading.Event()
    started = threading.Event()

    def execute(claim: Claim, service: Service) -> Outcome:
        started.set()
        release.wait(10)
        return Outcome(INTERRUPTED, None, "stopped by the platform")

    rig = Rig(tmp_path, execute)
    rig.services.apply([Service.model_validate({"name": "a", "script": "true"})])
    rig.pool.start()
    (job_id,) = rig.add("a", 1)
    assert started.wait(5)
    rig.pool.stop(0.2, release.set)
    job = rig.store.job(job_id)
    assert job is not None and job.status == QUEUED
    assert rig.store.attempts(job_id)[0].status == INTERRUPTED


def test_a_full_pool_waits_quietly_instead_of_spinning(make: Callable[..., Rig]) -> None:
    gate = threading.Event()
    rig = make(lambda c, s: (gate.wait(5), Outcome(SUCCEEDED, 0))[1], workers=1)
    calls = 0
    claim = rig.store.claim

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return claim(*args, **kwargs)

    rig.store.claim = counting  # type: ignore[method-assign]
    rig.add("a", 3)
    time.sleep(1.0)
    assert calls <= 5, f"the scheduler claimed {calls} times in a second while full"
    gate.set()
    assert rig.wait_done() == {SUCCEEDED: 3}


def test_interrupted_attempts_do_not_use_up_retries(
    make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "backoff", lambda attempt: 0.01)

    def execute(claim: Claim, service: Service) -> Outcome:
        if claim.attempt <= 2:
            return Outcome(INTERRUPTED, None, "stopped by the platform")
        if claim.attempt == 3:
            return Outcome(FAILED, 1, "exit status 1")
        return Outcome(SUCCEEDED, 0)

    rig = make(execute, retries=1)
    (job_id,) = rig.add("a", 1)
    assert rig.wait_done() == {SUCCEEDED: 1}
    assert [a.status for a in rig.store.attempts(job_id)] == [
        INTERRUPTED,
        INTERRUPTED,
        FAILED,
        SUCCEEDED,
    ]


def test_waiters_are_told_when_their_job_is_deleted_or_will_not_start(
    make: Callable[..., Rig],
) -> None:
    from ondrop.errors import NotFoundError, UnavailableError

    gate = threading.Event()
    rig = make(lambda c, s: (gate.wait(5), Outcome(SUCCEEDED, 0))[1], workers=1)
    running, queued, deleted = rig.add("a", 3)
    time.sleep(0.2)
    gone = rig.waiters.watch(deleted)
    rig.store.delete_job(deleted)
    rig.waiters.abandon([deleted], NotFoundError("deleted"))
    with pytest.raises(NotFoundError):
        gone.result(1)
    assert rig.waiters.watch(deleted).exception(1) is not None  # deleted: told at once
    first, second = rig.waiters.watch(running), rig.waiters.watch(queued)
    rig.pool.drain()
    rig.waiters.closed = UnavailableError("stopping")
    rig.waiters.abandon([queued], rig.waiters.closed)
    with pytest.raises(UnavailableError):
        second.result(1)
    assert rig.waiters.watch(queued).exception(1) is not None  # late waiters are told too
    gate.set()
    assert first.result(5).status == SUCCEEDED


def test_a_store_outage_is_waited_out_without_using_up_retries(
    make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ondrop.store.base import UNAVAILABLE

    monkeypatch.setattr(policy, "backoff", lambda attempt: 0.01)

    def execute(claim: Claim, service: Service) -> Outcome:
        if claim.attempt <= 3:
            return Outcome(FAILED, None, "staging in failed: store down", cause=Cause.UNAVAILABLE)
        return Outcome(SUCCEEDED, 0)

    rig = make(execute)  # retries: 0
    (job_id,) = rig.add("a", 1)
    assert rig.wait_done() == {SUCCEEDED: 1}
    assert [a.status for a in rig.store.attempts(job_id)] == [
        UNAVAILABLE,
        UNAVAILABLE,
        UNAVAILABLE,
        SUCCEEDED,
    ]
