"""A backend for tests of the control plane: each job is a call of a function of the test's
(its JobSpec and a script_ended callback in, its Outcome out) on a thread of its own.
Cancel and stop_all set the job's `stopping` event, which the function may wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from ondrop.backends.base import Backend, Listener
from ondrop.jobs import Cause, JobSpec, Report
from ondrop.store.base import FAILED, Outcome

Execute = Callable[[JobSpec, Callable[[], None]], Outcome]


class StubBackend(Backend):
    name = "stub"

    def __init__(self, execute: Execute, node: str = "stub") -> None:
        self.execute = execute
        self._node = node
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self.stopping: dict[str, threading.Event] = {}  # running job id -> set to stop it
        self.submitted: list[JobSpec] = []
        self.survivors: set[str] = set()  # job ids adopt() says still run

    def start(self, listener: Listener) -> None:
        self._listener = listener

    def submit(self, spec: JobSpec) -> str:
        with self._lock:
            self.stopping[spec.job_id] = threading.Event()
            self.submitted.append(spec)
        threading.Thread(target=self._run, args=(spec,), daemon=True).start()
        return f"{self._node}/{spec.job_id}"

    def cancel(self, job_id: str) -> None:
        with self._lock:
            event = self.stopping.get(job_id)
        if event is not None:
            event.set()

    def adopt(self, handles: Mapping[str, str]) -> set[str]:
        return set(handles) & self.survivors

    def node(self) -> str:
        return self._node

    def stop_all(self, force: bool = False) -> None:
        with self._lock:
            events = list(self.stopping.values())
        for event in events:
            event.set()

    def _run(self, spec: JobSpec) -> None:
        listener = self._listener
        assert listener is not None, "the backend was not started"
        try:
            outcome = self.execute(spec, lambda: listener.script_ended(spec.job_id))
        except Exception as exc:
            outcome = Outcome(FAILED, None, f"internal error: {exc}", cause=Cause.INTERNAL)
        with self._lock:
            self.stopping.pop(spec.job_id, None)
        listener.ended(Report(spec.job_id, spec.attempt, outcome))
