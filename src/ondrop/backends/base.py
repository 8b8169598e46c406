"""Backend: where a pool's claimed jobs execute. The control plane hands it a JobSpec; the
backend runs it somewhere (threads here, a Ray cluster) and tells its Listener how it
ended, with a Report.

The listener is called rather than polled: on this machine the job's own thread tells it
the moment the job ends (a queue between them would cost the tiny jobs their speed); a
remote backend calls it from the thread that waits on the cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ondrop.jobs import JobSpec, Report

if TYPE_CHECKING:
    from ondrop.joblog import LiveLog


class Listener(Protocol):
    """Told by a backend about the jobs it was handed."""

    def script_ended(self, job_id: str) -> None:
        """The job's script is over (its outputs are being stored): its room can go to the
        next job. Optional for a backend: ended() implies it."""

    def ended(self, report: Report) -> None:
        """The attempt is over. Called once per submitted attempt, from any thread."""


class Backend(ABC):
    name: str = ""

    @abstractmethod
    def start(self, listener: Listener) -> None:
        """Begin: reports go to `listener` from now on."""

    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start running `spec`; returns the handle that finds it again (stored with the
        attempt). Never blocks on the job."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop the job if it runs here; its report then says it was stopped."""

    def adopt(self, handles: Mapping[str, str]) -> set[str]:
        """After a restart: the jobs (id -> handle of their running attempt) that still run
        on this backend and whose reports will come; the others are run again. A backend
        whose jobs cannot outlive the control plane adopts none."""
        return set()

    def node(self) -> str:
        """The node this backend's jobs run on, when it is one machine; "" otherwise."""
        return ""

    def problem(self) -> str | None:
        """Why the backend cannot run jobs now (a cluster that cannot be reached), or None."""
        return None

    def live_log(self, job_id: str, attempt: int) -> LiveLog | None:
        """The log of that attempt's script while it runs, read as it grows, where this
        control plane can read it; None otherwise (it is stored when the attempt ends)."""
        return None

    def stop_all(self, force: bool = False) -> None:
        """Stop every running job now (`force`: kill at once); their reports say stopped."""

    def close(self) -> None:
        """Release what the backend holds; nothing runs any more."""
