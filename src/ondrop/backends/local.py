"""The local backend: each job runs on a thread of this process, in the supervisor (stage
in, the runtime, stage out), on this machine. A thread is kept THREAD_IDLE seconds for the
next job, then ended: the platform costs nothing between bursts of work.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable

from ondrop.backends.base import Backend, Listener
from ondrop.joblog import LiveLog
from ondrop.jobs import Cause, JobSpec, Report
from ondrop.runtime.base import Runtime
from ondrop.store.base import FAILED, Outcome
from ondrop.supervisor import Supervisor

log = logging.getLogger(__name__)

THREAD_IDLE = 30.0  # seconds a job thread waits for its next job before it ends


class LocalBackend(Backend):
    name = "local"

    def __init__(
        self, supervisor: Supervisor, runtimes: Iterable[Runtime], name: str = "jobs"
    ) -> None:
        self.supervisor = supervisor
        self.runtimes = list(runtimes)
        self._node = socket.gethostname()
        self._listener: Listener | None = None
        self._threads = JobThreads(self._run, f"ondrop-job-{name}")

    def start(self, listener: Listener) -> None:
        self._listener = listener

    def submit(self, spec: JobSpec) -> str:
        self._threads.run(spec)
        return f"{self._node}/{spec.job_id}"

    def cancel(self, job_id: str) -> None:
        for runtime in self.runtimes:
            runtime.stop(job_id)  # each ignores jobs it does not run

    def node(self) -> str:
        return self._node

    def live_log(self, job_id: str, attempt: int) -> LiveLog | None:
        return self.supervisor.live_log(job_id, attempt)

    def stop_all(self, force: bool = False) -> None:
        for runtime in self.runtimes:
            runtime.stop_all(force)

    def close(self) -> None:
        self._threads.close()

    def _run(self, spec: JobSpec) -> None:
        listener = self._listener
        assert listener is not None, "the backend was not started"
        try:
            report = self.supervisor.run(spec, lambda: listener.script_ended(spec.job_id))
        except Exception as exc:
            log.exception("job %s: the supervisor failed", spec.job_id)
            outcome = Outcome(FAILED, None, f"internal error: {exc}", cause=Cause.INTERNAL)
            report = Report(spec.job_id, spec.attempt, outcome)
        if report.outcome.node != self._node:
            report = dataclasses.replace(
                report, outcome=dataclasses.replace(report.outcome, node=self._node)
            )
        listener.ended(report)


class JobThreads:
    """The threads that run a pool's jobs: one per running job, each kept THREAD_IDLE seconds
    after its job for the next one (a thread started per job costs more than the whole
    bookkeeping of a tiny job), so that none is left once the work is done."""

    def __init__(self, target: Callable[[JobSpec], None], name: str) -> None:
        self.target = target
        self.name = name
        self._jobs: queue.SimpleQueue[JobSpec | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting for a job that none is on its way to. Invariant: jobs in the
        # queue + idle == threads waiting.
        self._idle = 0
        self._closed = False

    def run(self, spec: JobSpec) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(spec)
                return
        threading.Thread(target=self._work, args=(spec,), daemon=True, name=self.name).start()

    def close(self) -> None:
        """End the waiting threads (the pool stops; no job runs)."""
        with self._lock:
            waiting, self._idle = self._idle, 0
            self._closed = True  # and those still finishing a job end after it
        for _ in range(waiting):
            self._jobs.put(None)

    def _work(self, spec: JobSpec | None) -> None:
        while spec is not None:
            self.target(spec)
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
            try:
                spec = self._jobs.get(timeout=THREAD_IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no job is on its way to this thread: it may end
                        self._idle -= 1
                        return
                spec = self._jobs.get()  # one is: every waiting thread has one coming
