"""Whoever waits for a job to end (a `/run` client): a future per waiter, resolved when the
job has finished for good, or failed when it is deleted or will not run before shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future

from ondrop.errors import NotFoundError
from ondrop.store.base import FINISHED, Job, Store


class Waiters:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._futures: dict[str, list[Future[Job]]] = {}
        self._lock = threading.Lock()
        self.closed: Exception | None = None  # set at shutdown: what late waiters are told

    def watch(self, job_id: str, running: bool = False) -> Future[Job]:
        """A future for the job's end; `running` says the job runs now (it may still end
        during a shutdown, which fails the others)."""
        future: Future[Job] = Future()
        with self._lock:
            self._futures.setdefault(job_id, []).append(future)
        job = self.store.job(job_id)
        if job is None:
            self.abandon([job_id], NotFoundError(f"job {job_id!r} was deleted"))
        elif job.status in FINISHED:
            self.resolve(job)
        elif self.closed is not None and not running:
            self.abandon([job_id], self.closed)
        return future

    def waiting(self) -> list[str]:
        with self._lock:
            return list(self._futures)

    def ended_elsewhere(self, job_id: str) -> None:
        """The store says the job ended for good (on another control plane, or here):
        whoever waits for it here is told now, without waiting for their next look."""
        with self._lock:
            if job_id not in self._futures:
                return
        job = self.store.job(job_id)
        if job is not None and job.status in FINISHED:
            self.resolve(job)

    def resolve(self, job: Job) -> None:
        with self._lock:
            futures = self._futures.pop(job.id, [])
        for future in futures:
            if not future.done():
                future.set_result(job)

    def abandon(self, job_ids: Iterable[str], error: Exception) -> None:
        with self._lock:
            futures = [f for j in job_ids for f in self._futures.pop(j, [])]
        for future in futures:
            if not future.done():
                future.set_exception(error)
