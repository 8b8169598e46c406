"""A pool's dispatcher: claim -> submit to the pool's backend -> record the end.

One scheduler thread claims due jobs while the pool's admission (faas: a count; batch:
CPU, memory and GPUs) and the platform's limit allow, within each service's cap
(`max_concurrency`, `synchronous.max_scale`), services taking turns, and hands each to the
backend as a JobSpec. The backend's report of an attempt is written back at once (its
outputs first, so that a chain's next jobs exist before the end is known), so a crash at any
point leaves the job queued or running, never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from ondrop.backends.base import Backend
from ondrop.errors import NotFoundError, UnavailableError, retryable
from ondrop.fdl.models import Service
from ondrop.jobs import Cause, JobSpec, Report
from ondrop.pools.base import Admission, Allocation, Slots
from ondrop.pools.policy import STORE_RETRY_CAP, next_step
from ondrop.pools.specs import job_spec
from ondrop.pools.waiters import Waiters
from ondrop.quotas import Quotas
from ondrop.replicas import LEASE
from ondrop.services import Services
from ondrop.storage.base import ObjectInfo
from ondrop.store.base import (
    FAILED,
    FINISHED,
    Claim,
    Job,
    Outcome,
    Quota,
    Store,
)
from ondrop.telemetry import Telemetry

log = logging.getLogger(__name__)

# Told of the outputs an attempt stored, before its end is recorded: (job id, outputs).
OutputsHook = Callable[[str, tuple[tuple[str, ObjectInfo], ...]], None]
IDLE_WAIT = 5.0  # seconds the scheduler sleeps when nothing is due and nothing wakes it
BACKEND_WAIT = 1.0  # seconds between looks at a backend that cannot take jobs now


class Dispatcher:
    def __init__(
        self,
        store: Store,
        services: Services,
        admission: Admission,
        backend: Backend,
        waiters: Waiters,
        slots: Slots,
        on_finished: Callable[[Claim, Job], None] | None = None,
        on_outputs: OutputsHook | None = None,
        wake_pool: Callable[[str], None] | None = None,
        owner: str = "",
        quotas: Quotas | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.name = admission.name
        self.telemetry = telemetry
        self.quotas = quotas  # the users' (their services' jobs at once)
        self.owner = owner  # the control plane its claims are leased to
        self.store = store
        self.services = services
        self.admission = admission
        self.backend = backend
        self.waiters = waiters
        self.slots = slots
        self.on_finished = on_finished
        self.on_outputs = on_outputs
        self.wake_pool = wake_pool  # another pool has a job now (hybrid: faas -> batch)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[str, str] = {}  # job id -> service
        self._began: dict[str, float] = {}  # job id -> when its attempt was handed over
        # What a job holds until its script ends, and whether its admission gave it.
        self._allocations: dict[str, tuple[Allocation, bool]] = {}
        self._claims: dict[str, Claim] = {}  # running job id -> its claim
        self._cancelled: dict[str, str] = {}  # running job id -> why it is being cancelled
        self._thread = threading.Thread(target=self._loop, name=f"ondrop-{self.name}", daemon=True)

    # -- life cycle --------------------------------------------------------------
    def start(self) -> None:
        self.backend.start(self)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self) -> None:
        """Stop starting jobs (shutdown has begun); running ones go on."""
        self._stopping.set()
        self._wake.set()

    def stop(self, grace: float, interrupt: Callable[[], None]) -> None:
        """Drain; give running jobs `grace` seconds, then `interrupt` them and wait for them
        to end. Interrupted jobs are queued again and run on the next start."""
        self.drain()
        if self._thread.is_alive():
            self._thread.join()
        deadline = time.monotonic() + grace
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            left = len(self._running)
        if left:
            log.warning("stopping %d running job(s); they will run again on the next start", left)
            interrupt()
        with self._idle:
            while self._running:
                self._idle.wait(1.0)

    def running(self) -> dict[str, int]:
        """Jobs running now, by service."""
        with self._lock:
            return dict(Counter(self._running.values()))

    def runs(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running

    def cancel_running(self, job_id: str, reason: str) -> bool:
        """Stop the job if it runs here; it then ends cancelled. False when it does not."""
        with self._lock:
            if job_id not in self._running:
                return False
            self._cancelled[job_id] = reason
        self.backend.cancel(job_id)
        return True

    # -- scheduling ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self._schedule()
            except Exception as exc:  # the store said why; keep the platform alive, try again
                if retryable(exc):  # a locked database, a full disk: it passes
                    log.warning("%s: cannot claim jobs now (%s); retrying in 1 s", self.name, exc)
                else:
                    log.exception("%s: scheduling failed; retrying in 1 s", self.name)
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def _schedule(self) -> float:
        if self._stopping.is_set():
            return IDLE_WAIT
        if self.backend.problem() is not None:
            return BACKEND_WAIT  # a cluster that cannot be reached: the jobs wait queued
        free = min(self.admission.slots(), self.slots.free())
        if free > 0:
            # Counted in the store, against what runs on every pool and control plane.
            services = self.services.all()
            caps = {s.name: s.cap for s in services if s.cap is not None}
            quotas = self.quotas.for_claim(services) if self.quotas is not None else []
            take = self._claim_counted if self.admission.counted else self._claim_each
            claims = take(free, caps, quotas)
            for claim in claims:
                with self._lock:
                    self._running[claim.job.id] = claim.job.service
                    self._claims[claim.job.id] = claim
                self._submit(claim)
            if len(claims) == free:
                # Every slot is taken: nothing more can start before a job ends, which
                # wakes the scheduler (no need to ask the store when the next job is due).
                return IDLE_WAIT
        due, now = self.store.next_due(self.name), time.time()
        if due is None or due <= now:
            # Nothing queued, or due jobs that must wait for room: a new job or a finished
            # one wakes the scheduler.
            return IDLE_WAIT
        return min(IDLE_WAIT, due - now)  # a retry waits for its time

    def _claim_each(self, free: int, caps: dict[str, int], quotas: list[Quota]) -> list[Claim]:
        """Claim up to `free` jobs, each one the admission takes (resources, devices)."""
        reserved: list[tuple[str, bool]] = []  # what `_accept` reserved in this claim
        now = time.time()
        try:
            claims = self.store.claim(
                free,
                caps,
                now,
                self.name,
                lambda job: self._accept(job, reserved),
                owner=self.owner,
                lease_until=now + LEASE if self.owner else None,
                quotas=quotas,
            )
        except BaseException:
            # Nothing was claimed, so nothing may stay reserved; the loop retries in 1 s.
            self._give_back(reserved)
            raise
        claimed = {claim.job.id for claim in claims}
        unclaimed = [r for r in reserved if r[0] not in claimed]
        if unclaimed:
            self._give_back(unclaimed)
            self._wake.set()
        return claims

    def _claim_counted(self, free: int, caps: dict[str, int], quotas: list[Quota]) -> list[Claim]:
        """Claim up to `free` jobs of an admission where every job fits while there is
        room: the platform's slots taken first, so that no job needs asking about (and a
        shared store claims them in one statement)."""
        taken = 0
        while taken < free and self.slots.take():
            taken += 1
        now = time.time()
        try:
            claims = self.store.claim(
                taken,
                caps,
                now,
                self.name,
                owner=self.owner,
                lease_until=now + LEASE if self.owner else None,
                quotas=quotas,
            )
        except BaseException:
            self._give_slots(taken)
            raise
        self._give_slots(taken - len(claims))
        for claim in claims:
            service = self.services.find(claim.job.service)
            # The room was counted by this thread alone; another only gives room back.
            allocation = (
                Allocation(1.0) if service is None else self.admission.admit(claim.job, service)
            )
            assert allocation is not None, "a counted admission refused a job it had room for"
            with self._lock:
                self._allocations[claim.job.id] = (allocation, service is not None)
        return claims

    def _give_slots(self, count: int) -> None:
        for _ in range(count):
            self.slots.give()
            self.slots.done()

    def _accept(self, job: Job, reserved: list[tuple[str, bool]]) -> bool:
        """Whether `job` may start now; if so, what it holds is reserved for it, and noted
        in `reserved` (its id, and whether the admission gave it something) until the
        claim is known to have committed."""
        service = self.services.find(job.service)
        if not self.slots.take():
            return False
        if service is None:  # it fails at once, saying so
            allocation: Allocation | None = Allocation(1.0)
        else:
            allocation = self.admission.admit(job, service)
            if allocation is None:
                self.slots.give()
                self.slots.done()
                return False
        assert allocation is not None
        with self._lock:
            self._allocations[job.id] = (allocation, service is not None)
        reserved.append((job.id, service is not None))
        return True

    def _give_back(self, reserved: list[tuple[str, bool]]) -> None:
        """Undo what `_accept` reserved for jobs no claim started (the store failed it)."""
        for job_id, admitted in reserved:
            with self._lock:
                held = self._allocations.pop(job_id, None)
            if held is None:
                continue
            if admitted:
                self.admission.release(held[0])
            self.slots.give()
            self.slots.done()

    def _submit(self, claim: Claim) -> None:
        """Hand the claimed job to the backend; a job that cannot be handed over ends at
        once, saying why."""
        job = claim.job
        with self._lock:
            allocation = self._allocations[job.id][0]
        try:
            described = self._describe(claim, allocation)
            if isinstance(described, JobSpec):
                began = time.time()
                with self._lock:  # before submit: the attempt may end before it returns
                    self._began[job.id] = began
                self.backend.submit(described)
                if self.telemetry is not None:
                    self.telemetry.attempt_started(claim, self.name, began)
                return
            outcome = described
        except UnavailableError as exc:  # the backend went away meanwhile: later, uncounted
            outcome = Outcome(FAILED, None, str(exc), cause=Cause.UNAVAILABLE)
        except Exception as exc:
            log.exception("job %s: the %s backend refused it", job.id, self.backend.name)
            outcome = Outcome(FAILED, None, f"internal error: {exc}", cause=Cause.INTERNAL)
        with self._lock:
            self._began.pop(job.id, None)  # it never ran
        self.ended(Report(job.id, claim.attempt, outcome))

    def _describe(self, claim: Claim, allocation: Allocation) -> JobSpec | Outcome:
        """The claimed job's JobSpec, or why it cannot even be described: its service
        removed, its input (or its collected family's record) gone."""
        service = self.services.find(claim.job.service)
        if service is None:
            reason = f"service {claim.job.service!r} was removed"
            return Outcome(FAILED, None, reason, cause=Cause.INTERNAL)
        try:
            return job_spec(self.store, claim, service, allocation)
        except NotFoundError as exc:
            return Outcome(FAILED, None, f"input is gone: {exc}", cause=Cause.INPUT_GONE)

    # -- the backend's listener ----------------------------------------------------
    def script_ended(self, job_id: str) -> None:
        """The job's slot and resources go to the next job while this one's outputs are
        stored and its end recorded."""
        with self._lock:
            held = self._allocations.pop(job_id, None)
        if held is None:
            return  # given back already
        allocation, admitted = held
        if admitted:
            self.admission.release(allocation)
        self.slots.give()
        self._wake.set()

    def ended(self, report: Report) -> None:
        job_id = report.job_id
        self.script_ended(job_id)
        with self._lock:
            claim = self._claims.get(job_id)
        if claim is None or claim.attempt != report.attempt:
            log.warning("job %s: a report of attempt %d no one waits for", job_id, report.attempt)
            return
        service = self.services.find(claim.job.service)
        outcome = report.outcome
        if report.outputs and self.on_outputs is not None:
            try:
                self.on_outputs(job_id, report.outputs)
            except Exception:
                log.exception("job %s: recording its outputs' events failed", job_id)
        outcome, retry_at, pool = self._next(claim, service, outcome)
        finished = self._record_end(claim, outcome, retry_at, pool)
        with self._idle:
            began = None
            if self._claims.get(job_id) is claim:  # not yet claimed again, for a retry
                self._running.pop(job_id, None)
                self._claims.pop(job_id, None)
                began = self._began.pop(job_id, None)
            self._idle.notify_all()
        if self.telemetry is not None:
            ran = None if began is None else time.time() - began
            self.telemetry.attempt_ended(claim, self.name, outcome, finished, ran)
        self.slots.done()
        if finished is not None and finished.status in FINISHED:
            if self.on_finished is not None:
                try:
                    self.on_finished(claim, finished)
                except Exception:
                    log.exception("job %s: clean-up after it ended failed", job_id)
            self.waiters.resolve(finished)
        if pool is not None and pool != self.name and self.wake_pool is not None:
            self.wake_pool(pool)
        self._wake.set()

    def _record_end(
        self, claim: Claim, outcome: Outcome, retry_at: float | None, pool: str | None
    ) -> Job | None:
        """Record how the attempt ended. A store that cannot for a while (a database held
        locked, a full disk) is waited for, however long it takes: else the job would stay
        running until the next start. None when it could not be recorded."""
        delay = 0.5
        while True:
            try:
                return self.store.finish(claim.job.id, claim.attempt, outcome, retry_at, pool)
            except Exception as exc:
                if not retryable(exc) or self._stopping.is_set():
                    log.exception(
                        "job %s: cannot record its end; it runs again on restart", claim.job.id
                    )
                    return None
                log.warning(
                    "job %s: cannot record its end yet (%s); trying again in %g s",
                    claim.job.id,
                    exc,
                    delay,
                )
            self._stopping.wait(delay)
            delay = min(STORE_RETRY_CAP, delay * 2)

    def _next(
        self, claim: Claim, service: Service | None, outcome: Outcome
    ) -> tuple[Outcome, float | None, str | None]:
        """What becomes of the job after this attempt: (outcome to record, when to run it
        again or None, the pool it goes to or None to stay)."""
        with self._lock:
            cancelled = self._cancelled.pop(claim.job.id, None)
        failures = 0
        if outcome.status == FAILED and service is not None:  # only then does it matter
            failures = sum(a.status == FAILED for a in self.store.attempts(claim.job.id))
        step = next_step(
            outcome,
            pool=self.name,
            service=service,
            attempt=claim.attempt,
            failures=failures,
            now=time.time(),
            cancelled=cancelled,
        )
        return step.outcome, step.retry_at, step.pool
