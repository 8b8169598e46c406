"""The local pool: queued jobs from the store run on worker threads of this machine.

One scheduler thread claims due jobs while there are free workers, within the
platform's limit and each service's `max_concurrency`, services taking turns.
Workers run the supervisor; a finished attempt is written back before the next
claim, so a crash at any point leaves the job queued or running, never lost.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from ondrop.errors import NotFoundError, UnavailableError
from ondrop.fdl.models import Service
from ondrop.services import Services
from ondrop.store.base import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    UNAVAILABLE,
    Claim,
    Job,
    Outcome,
    Store,
)

log = logging.getLogger(__name__)

Execute = Callable[[Claim, Service], Outcome]
IDLE_WAIT = 5.0  # seconds the scheduler sleeps when nothing is due and nothing wakes it
STORE_RETRY_CAP = 60.0  # longest wait between attempts while a store is down


def backoff(attempt: int) -> float:
    """Seconds before retrying after failed attempt number `attempt`: 1, 2, 4 ... 300, ±50%."""
    base = min(300.0, 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


class LocalPool:
    def __init__(
        self,
        store: Store,
        services: Services,
        execute: Execute,
        workers: int,
        on_finished: Callable[[Claim, Job], None] | None = None,
        stop_job: Callable[[str], None] | None = None,
    ) -> None:
        self.on_finished = on_finished
        self.stop_job = stop_job  # stops a running job's process or container
        self._cancelled: dict[str, str] = {}  # running job id -> why it is being cancelled
        self.store = store
        self.services = services
        self.execute = execute
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="ondrop-worker")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # job id -> service
        self._idle = threading.Condition(self._lock)
        self._waiters: dict[str, list[Future[Job]]] = {}
        self._thread = threading.Thread(target=self._loop, name="ondrop-scheduler", daemon=True)

    # -- life cycle --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self) -> None:
        """Stop starting jobs (shutdown has begun). Running ones go on; whoever waits for a
        job that will not start now is told so."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            waiting = [j for j in self._waiters if j not in self._running]
        self.abandon(
            waiting, UnavailableError("the platform is stopping; the job runs on its next start")
        )

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
        self._executor.shutdown(wait=True)

    def running(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(self._running.values()))

    # -- waiting for a job ---------------------------------------------------------
    def watch(self, job_id: str) -> Future[Job]:
        """A future that is done when the job has finished for good (not between retries),
        or fails when the job is deleted or will not run before shutdown."""
        future: Future[Job] = Future()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(future)
            stopping = self._stopping.is_set() and job_id not in self._running
        job = self.store.job(job_id)
        if job is None:
            self.abandon([job_id], NotFoundError(f"job {job_id!r} was deleted"))
        elif job.status in FINISHED:
            self._resolve(job)
        elif stopping:
            self.abandon(
                [job_id],
                UnavailableError("the platform is stopping; the job runs on its next start"),
            )
        return future

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> str:
        """Cancel a queued job, or stop a running one and end it cancelled; returns the
        job's status now (a finished job is left as it is)."""
        job = self.store.job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if self.store.cancel_queued(job_id, reason):
            cancelled = self.store.job(job_id)
            if cancelled is not None:
                self._resolve(cancelled)
            return CANCELLED
        with self._lock:
            running = job_id in self._running
            if running:
                self._cancelled[job_id] = reason
        if running and self.stop_job is not None:
            self.stop_job(job_id)
            return RUNNING
        return job.status

    def abandon(self, job_ids: Iterable[str], error: Exception) -> None:
        """Fail the waiters of these jobs with `error` (deleted, or not run before shutdown)."""
        with self._lock:
            futures = [f for j in job_ids for f in self._waiters.pop(j, [])]
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def _resolve(self, job: Job) -> None:
        with self._lock:
            futures = self._waiters.pop(job.id, [])
        for future in futures:
            if not future.done():
                future.set_result(job)

    # -- scheduling ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self._schedule()
            except Exception:  # the store said why; keep the platform alive and try again
                log.exception("scheduling failed; retrying in 1 s")
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def _schedule(self) -> float:
        if self._stopping.is_set():
            return IDLE_WAIT
        with self._lock:
            free = self.workers - len(self._running)
            busy = Counter(self._running.values())
        if free > 0:
            caps = {
                s.name: s.max_concurrency - busy.get(s.name, 0)
                for s in self.services.all()
                if s.max_concurrency is not None
            }
            now = time.time()
            for claim in self.store.claim(free, caps, now):
                with self._lock:
                    self._running[claim.job.id] = claim.job.service
                self._executor.submit(self._run, claim)
        due, now = self.store.next_due(), time.time()
        if due is None or due <= now:
            # Nothing queued, or due jobs that no free worker or cap allows: a new job or a
            # finished one wakes the scheduler.
            return IDLE_WAIT
        return min(IDLE_WAIT, due - now)  # a retry waits for its time

    def _run(self, claim: Claim) -> None:
        job = claim.job
        service: Service | None = None
        try:
            service = self.services.find(job.service)
            if service is None:
                outcome = Outcome(FAILED, None, f"service {job.service!r} was removed")
            else:
                outcome = self.execute(claim, service)
        except Exception as exc:
            log.exception("job %s: the supervisor failed", job.id)
            outcome = Outcome(FAILED, None, f"internal error: {exc}")
        with self._lock:
            cancelled = self._cancelled.pop(job.id, None)
        retry_at: float | None = None
        if cancelled is not None and outcome.status != SUCCEEDED:
            outcome = dataclasses.replace(outcome, status=CANCELLED, reason=cancelled)
        elif outcome.status == INTERRUPTED:
            retry_at = time.time()
        elif outcome.retryable:
            # A store was down: wait and try again, however long it takes, without using
            # up the service's retries.
            outcome = dataclasses.replace(outcome, status=UNAVAILABLE)
            retry_at = time.time() + min(STORE_RETRY_CAP, backoff(claim.attempt))
        elif outcome.status == FAILED and service is not None:
            # Attempts the platform interrupted, or that found a store down, are not the
            # job's fault: only its own failures count.
            failures = 1 + sum(a.status == FAILED for a in self.store.attempts(job.id))
            if failures <= service.retries:
                retry_at = time.time() + backoff(failures)
        try:
            finished = self.store.finish(job.id, claim.attempt, outcome, retry_at)
        except Exception:
            log.exception("job %s: cannot record its end; it runs again on restart", job.id)
            finished = None
        with self._idle:
            self._running.pop(job.id, None)
            self._idle.notify_all()
        if finished is not None and finished.status in FINISHED:
            if self.on_finished is not None:
                try:
                    self.on_finished(claim, finished)
                except Exception:
                    log.exception("job %s: clean-up after it ended failed", job.id)
            self._resolve(finished)
        self._wake.set()
