"""A pool on this machine: queued jobs of the pool, taken from the store, each run on a
thread of its own (kept for the next job for THREAD_IDLE seconds, then ended: the
platform costs nothing between bursts of work).

One scheduler thread claims due jobs while the pool's admission (faas: a count; batch:
CPU, memory and GPUs) and the platform's limit allow, within each service's
`max_concurrency`, services taking turns. A finished attempt is written back at once,
so a crash at any point leaves the job queued or running, never lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from ondrop.errors import retryable
from ondrop.fdl.models import Service
from ondrop.jobs import Cause
from ondrop.pools.base import Admission, Allocation, Slots
from ondrop.pools.policy import STORE_RETRY_CAP, next_step
from ondrop.pools.waiters import Waiters
from ondrop.services import Services
from ondrop.store.base import (
    FAILED,
    FINISHED,
    Claim,
    Job,
    Outcome,
    Store,
)

log = logging.getLogger(__name__)

# execute(claim, service, allocation, script_ended): runs one job; calls script_ended()
# once its script is over, before the outputs are stored
Execute = Callable[[Claim, Service, Allocation, Callable[[], None]], Outcome]
IDLE_WAIT = 5.0  # seconds the scheduler sleeps when nothing is due and nothing wakes it
THREAD_IDLE = 30.0  # seconds a job thread waits for its next job before it ends


class LocalPool:
    def __init__(
        self,
        store: Store,
        services: Services,
        admission: Admission,
        execute: Execute,
        waiters: Waiters,
        slots: Slots,
        on_finished: Callable[[Claim, Job], None] | None = None,
        stop_job: Callable[[str], None] | None = None,
        wake_pool: Callable[[str], None] | None = None,
    ) -> None:
        self.name = admission.name
        self.store = store
        self.services = services
        self.admission = admission
        self.execute = execute
        self.waiters = waiters
        self.slots = slots
        self.on_finished = on_finished
        self.stop_job = stop_job  # stops a running job's process or container
        self.wake_pool = wake_pool  # another pool has a job now (hybrid: faas -> batch)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[str, str] = {}  # job id -> service
        self._allocations: dict[str, Allocation] = {}
        self._cancelled: dict[str, str] = {}  # running job id -> why it is being cancelled
        self._thread = threading.Thread(target=self._loop, name=f"ondrop-{self.name}", daemon=True)
        self._threads = JobThreads(self._run, f"ondrop-job-{self.name}")

    # -- life cycle --------------------------------------------------------------
    def start(self) -> None:
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
        self._threads.close()

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
        if self.stop_job is not None:
            self.stop_job(job_id)
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
        free = min(self.admission.slots(), self.slots.free())
        if free > 0:
            with self._lock:
                busy = Counter(self._running.values())
            caps = {
                s.name: s.max_concurrency - busy.get(s.name, 0)
                for s in self.services.all()
                if s.max_concurrency is not None
            }
            reserved: list[tuple[str, bool]] = []  # what `_accept` reserved in this claim
            try:
                claims = self.store.claim(
                    free, caps, time.time(), self.name, lambda job: self._accept(job, reserved)
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
            for claim in claims:
                with self._lock:
                    self._running[claim.job.id] = claim.job.service
                self._threads.run(claim)
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
        with self._lock:
            self._allocations[job.id] = allocation  # type: ignore[assignment]
        reserved.append((job.id, service is not None))
        return True

    def _give_back(self, reserved: list[tuple[str, bool]]) -> None:
        """Undo what `_accept` reserved for jobs no claim started (the store failed it)."""
        for job_id, admitted in reserved:
            with self._lock:
                allocation = self._allocations.pop(job_id, None)
            if allocation is None:
                continue
            if admitted:
                self.admission.release(allocation)
            self.slots.give()
            self.slots.done()

    def _run(self, claim: Claim) -> None:
        job = claim.job
        with self._lock:
            allocation = self._allocations.pop(job.id)
        service = self.services.find(job.service)
        released = False

        def script_ended() -> None:
            """The job's slot and resources go to the next job while this one's outputs
            are stored and its end recorded."""
            nonlocal released
            if not released:
                released = True
                if service is not None:
                    self.admission.release(allocation)
                self.slots.give()
                self._wake.set()

        try:
            if service is None:
                reason = f"service {job.service!r} was removed"
                outcome = Outcome(FAILED, None, reason, cause=Cause.INTERNAL)
            else:
                outcome = self.execute(claim, service, allocation, script_ended)
        except Exception as exc:
            log.exception("job %s: the supervisor failed", job.id)
            outcome = Outcome(FAILED, None, f"internal error: {exc}", cause=Cause.INTERNAL)
        finally:
            script_ended()
        outcome, retry_at, pool = self._next(claim, service, outcome)
        finished = self._record_end(claim, outcome, retry_at, pool)
        with self._idle:
            self._running.pop(job.id, None)
            self._idle.notify_all()
        self.slots.done()
        if finished is not None and finished.status in FINISHED:
            if self.on_finished is not None:
                try:
                    self.on_finished(claim, finished)
                except Exception:
                    log.exception("job %s: clean-up after it ended failed", job.id)
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


class JobThreads:
    """The threads that run a pool's jobs: one per running job, each kept THREAD_IDLE seconds
    after its job for the next one (a thread started per job costs more than the whole
    bookkeeping of a tiny job), so that none is left once the work is done."""

    def __init__(self, target: Callable[[Claim], None], name: str) -> None:
        self.target = target
        self.name = name
        self._jobs: queue.SimpleQueue[Claim | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting for a job that none is on its way to. Invariant: jobs in the
        # queue + idle == threads waiting.
        self._idle = 0
        self._closed = False

    def run(self, claim: Claim) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(claim)
                return
        threading.Thread(target=self._work, args=(claim,), daemon=True, name=self.name).start()

    def close(self) -> None:
        """End the waiting threads (the pool stops; no job runs)."""
        with self._lock:
            waiting, self._idle = self._idle, 0
            self._closed = True  # and those still finishing a job end after it
        for _ in range(waiting):
            self._jobs.put(None)

    def _work(self, claim: Claim | None) -> None:
        while claim is not None:
            self.target(claim)
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
            try:
                claim = self._jobs.get(timeout=THREAD_IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no job is on its way to this thread: it may end
                        self._idle -= 1
                        return
                claim = self._jobs.get()  # one is: every waiting thread has one coming
