"""The local pool: queued jobs from the store run on worker threads of this machine.

One scheduler thread claims due jobs while there are free workers, within the
platform's limit and each service's `max_concurrency`, services taking turns.
Workers run the supervisor; a finished attempt is written back before the next
claim, so a crash at any point leaves the job queued or running, never lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ondrop.fdl.models import Service
from ondrop.services import Services
from ondrop.store.base import FAILED, FINISHED, INTERRUPTED, Claim, Job, Outcome, Store

log = logging.getLogger(__name__)

Execute = Callable[[Claim, Service], Outcome]
IDLE_WAIT = 5.0  # seconds the scheduler sleeps when nothing is due and nothing wakes it


def backoff(attempt: int) -> float:
    """Seconds before retrying after failed attempt number `attempt`: 1, 2, 4 ... 300, ±50%."""
    base = min(300.0, 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


class LocalPool:
    def __init__(self, store: Store, services: Services, execute: Execute, workers: int) -> None:
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

    def stop(self, grace: float, interrupt: Callable[[], None]) -> None:
        """Stop claiming; give running jobs `grace` seconds, then `interrupt` them.
        Interrupted jobs are queued again and run on the next start."""
        self._stopping.set()
        self._wake.set()
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
        """A future that is done when the job has finished for good (not between retries)."""
        future: Future[Job] = Future()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(future)
        job = self.store.job(job_id)
        if job is not None and job.status in FINISHED:
            self._resolve(job)
        return future

    def forget(self, job_id: str, future: Future[Job]) -> None:
        with self._lock:
            futures = self._waiters.get(job_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiters.pop(job_id, None)

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
        due = self.store.next_due()
        if due is None:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, due - time.time()))

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
        retry_at: float | None = None
        if outcome.status == INTERRUPTED:
            retry_at = time.time()
        elif outcome.status == FAILED and service is not None and claim.attempt <= service.retries:
            retry_at = time.time() + backoff(claim.attempt)
        try:
            finished = self.store.finish(job.id, claim.attempt, outcome, retry_at)
        except Exception:
            log.exception("job %s: cannot record its end; it runs again on restart", job.id)
            finished = None
        with self._idle:
            self._running.pop(job.id, None)
            self._idle.notify_all()
        if finished is not None and finished.status in FINISHED:
            self._resolve(finished)
        self._wake.set()
