"""Store: the durable state (services, events, jobs, attempts) behind one small interface.

Everything that must survive a crash goes through here, and nothing else keeps
state that matters: the queue of jobs is a query, not a Python list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ondrop.events.base import Event
from ondrop.jobs import Cause

# Job statuses. A job is queued until a worker claims it, then running until it ends.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
# Never queued: what its event names is not read (a link in an input folder); the reason says why.
REFUSED = "refused"
FINISHED = (SUCCEEDED, FAILED, CANCELLED, REFUSED)
# An attempt may also end "interrupted": the platform stopped or died while it ran, or
# "unavailable": a store it needed was down. Neither counts against the job's retries.
INTERRUPTED = "interrupted"
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class StoredService:
    name: str
    definition: Mapping[str, Any]  # the service's JSON form, secrets included
    token: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Job:
    id: str
    service: str
    event_id: int
    status: str
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    priority: int = 0
    pool: str = "faas"
    input_key: str = ""  # the object that started it; for invocations the payload's name
    parent_job: str | None = None
    node: str = ""  # the node its latest attempt ran on, as its backend names it; "" until known


@dataclass(frozen=True)
class NewJob:
    """A job to create with an event: its id, service, pool and priority (higher first);
    queued, or REFUSED with the reason."""

    id: str
    service: str
    pool: str = "faas"
    priority: int = 0
    status: str = QUEUED
    reason: str = ""


@dataclass(frozen=True)
class Attempt:
    pool: str  # where it ran: faas or batch
    job_id: str
    number: int
    started_at: float
    finished_at: float | None
    status: str
    exit_code: int | None
    reason: str
    log: str
    node: str = ""  # the node it ran on, once known
    cause: Cause | None = None  # why it did not succeed (None while running, or when it did)
    # Where the backend submitted it (opaque to the store), so that a restarted control
    # plane can re-attach to it while it runs; "" when the backend gave none.
    handle: str = ""


@dataclass(frozen=True)
class Replica:
    """A control plane on the store: its id, the URL its API answers at, when it started
    and when it last said it was alive."""

    id: str
    address: str
    since: float
    seen: float


@dataclass(frozen=True)
class Usage:
    """What one service's jobs did in a span of time (OSCAR's /system/metrics)."""

    service: str
    sync: int = 0  # jobs made in it that a client waited for (/run)
    asynchronous: int = 0  # the others (/job, files, chains)
    seconds: float = 0.0  # how long its attempts ran within it


@dataclass(frozen=True)
class Quota:
    """What the jobs of one user's services may hold at once, counted in the store (every
    pool, every control plane): `needs` is what one job of each of those services counts
    (cores, bytes, GPUs); None, no limit."""

    owner: str
    needs: Mapping[str, tuple[float, int, int]]
    jobs: int | None = None
    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None

    def fits(self, held: tuple[int, float, int, int], service: str) -> bool:
        """Whether one more job of `service` fits beside what `held` (jobs, cores, bytes,
        GPUs) of the owner's already run."""
        cpu, memory, gpu = self.needs[service]
        jobs, cores, used, gpus = held
        return (
            (self.jobs is None or jobs + 1 <= self.jobs)
            and (self.cpu is None or cores + cpu <= self.cpu + 1e-9)
            and (self.memory is None or used + memory <= self.memory)
            and (self.gpu is None or gpus + gpu <= self.gpu)
        )


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns, with its attempt number and the event that started it."""

    job: Job
    attempt: int
    event: Event


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: `status` is SUCCEEDED, FAILED or INTERRUPTED; `cause` says
    why it did not succeed (None when it did, or for a failure of the script's exit)."""

    status: str
    exit_code: int | None = None
    reason: str = ""
    log: str = ""
    cause: Cause | None = None
    node: str = ""  # the node the attempt ran on (the backend fills it)
    provider: str = ""  # the storage provider that failed it, when one did

    @property
    def retryable(self) -> bool:
        """Not the job's fault (a store was down): try again later, without counting."""
        return self.cause is Cause.UNAVAILABLE


class Store(ABC):
    # Whether other control planes may use this store at the same time (a database
    # server), or it is this one's alone (a file in its data folder).
    shared: bool = False

    # -- services ---------------------------------------------------------
    @abstractmethod
    def save_services(self, services: Sequence[StoredService]) -> None:
        """Create or replace these services, all or none."""

    @abstractmethod
    def services(self) -> list[StoredService]: ...

    @abstractmethod
    def service(self, name: str) -> StoredService | None: ...

    @abstractmethod
    def delete_service(self, name: str) -> bool:
        """Remove the service and its jobs; False when there was none."""

    # -- events and jobs ----------------------------------------------------
    def add_event(self, event: Event, jobs: Sequence[NewJob]) -> list[Job]:
        """Record `event` with these queued jobs, atomically.

        Returns the jobs created; none when the same (source, key, version) was
        recorded before. With no jobs the event is only remembered as seen. A job of a
        service that is not (or no longer) saved is not created.
        """
        return self.add_events([(event, jobs)])

    @abstractmethod
    def add_events(self, batch: Sequence[tuple[Event, Sequence[NewJob]]]) -> list[Job]:
        """add_event for many events in one transaction (one wait for the disk)."""

    @abstractmethod
    def ensure_job(self, event: Event, job: NewJob) -> tuple[Job, bool]:
        """The job of `job.service` for this object version: the one recorded before, or
        `job` (recording the event too when new). True when it was created now.
        NotFoundError when the service is not saved."""

    @abstractmethod
    def seen(self, source: str, key: str, version: str) -> bool:
        """True when this object version was recorded before."""

    @abstractmethod
    def unseen(self, source: str, versions: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (key, version) pairs were not recorded before."""

    @abstractmethod
    def event(self, event_id: int) -> Event | None: ...

    @abstractmethod
    def event_jobs(self, source: str, key: str, version: str) -> list[Job]:
        """The jobs an object version started (none when it was never recorded)."""

    @abstractmethod
    def claim(
        self,
        limit: int,
        caps: Mapping[str, int],
        now: float,
        pool: str | None = None,
        accept: Callable[[Job], bool] | None = None,
        owner: str = "",
        lease_until: float | None = None,
        quotas: Sequence[Quota] = (),
    ) -> list[Claim]:
        """Take up to `limit` due queued jobs of `pool`, each one `accept` takes (it
        reserves what the job needs), and start an attempt for each, leased to the control
        plane `owner` until `lease_until`. A service in `caps` never has more than
        caps[service] jobs running, and the jobs of a quota's services never hold more than
        it allows, counted in the store (every pool, every control plane).
        Higher priority first, then the services with the fewest jobs running, oldest
        first. When it raises, nothing was claimed (every change is undone): the caller
        gives back what `accept` reserved."""

    @abstractmethod
    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        retry_at: float | None,
        pool: str | None = None,
    ) -> Job | None:
        """End an attempt, with the outcome's cause and node (a node already recorded for
        the attempt stays when the outcome names none). With `retry_at` the job is queued
        again to run then, in `pool` when given. Returns the job as it now is; None when it
        was deleted meanwhile."""

    @abstractmethod
    def set_handle(self, job_id: str, attempt: int, handle: str, node: str = "") -> bool:
        """Record where a running attempt was submitted (the backend's `handle`) and, when
        known, on which `node` (the job's node too). False, changing nothing, when
        `attempt` is not the job's running attempt any more (it ended, or was requeued)."""

    @abstractmethod
    def running_attempts(self, pool: str | None = None) -> list[tuple[str, int, str]]:
        """(job id, attempt number, handle) of every running attempt (of `pool`), oldest
        first: what a backend re-attaches to after a restart."""

    @abstractmethod
    def payloads_in_use(self) -> set[str]:
        """Invocation bodies some job may still need (it has not succeeded yet)."""

    @abstractmethod
    def retry_jobs(self, job_ids: Sequence[str]) -> list[str]:
        """Queue failed or cancelled jobs again, now; returns those that were."""

    @abstractmethod
    def cancel_queued(self, job_id: str, reason: str) -> bool:
        """Cancel the job if it is queued (True); a running one the pool stops."""

    @abstractmethod
    def requeue_running(
        self,
        reason: str,
        keep: Collection[str] = (),
        owner: str | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Mark running attempts interrupted (cause stopped) and queue their jobs again,
        except the jobs whose ids are in `keep` (a backend re-attached to them), which stay
        running; returns the ids of the jobs queued again. Every running attempt when
        `owner` is None (the one control plane starting); else those of `owner` (this
        control plane, restarted) and those whose lease ran out before `now` (their
        control plane died), never a live one's."""

    @abstractmethod
    def requeue_expired(self, reason: str, now: float) -> list[str]:
        """requeue_running for the attempts whose lease ran out before `now` alone: what
        a live control plane takes back from one that died."""

    @abstractmethod
    def request_cancel(self, job_id: str, reason: str) -> bool:
        """Ask the control plane that runs the job to stop it (it then ends cancelled):
        True when it runs; False, changing nothing, when it does not."""

    @abstractmethod
    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        """(job id, reason) of each running attempt of `owner` that request_cancel asked
        to stop."""

    @abstractmethod
    def renew(self, owner: str, until: float) -> int:
        """Extend the lease of every running attempt of `owner` to `until`; how many."""

    # -- control planes sharing the store -------------------------------------------
    @abstractmethod
    def lease(self, name: str, holder: str, until: float, now: float) -> bool:
        """Take or renew the lease `name` (work one control plane does at a time) for
        `holder` until `until`: True when it is free, ran out before `now`, or is
        `holder`'s already; False, changing nothing, while another holds it."""

    @abstractmethod
    def release(self, name: str, holder: str) -> None:
        """Give the lease `name` up, if `holder` holds it."""

    @abstractmethod
    def heartbeat(self, replica: Replica) -> None:
        """Record that the control plane `replica` is alive (as of `replica.seen`)."""

    @abstractmethod
    def replicas(self, seen_since: float) -> list[Replica]:
        """The control planes seen alive since `seen_since`, oldest first."""

    @abstractmethod
    def generation(self) -> int:
        """A number that changes whenever a service is saved or deleted: a control plane
        that caches the services reads them again when it differs."""

    @abstractmethod
    def next_due(self, pool: str | None = None) -> float | None:
        """When the earliest queued job (of `pool`) may run, or None when none is queued."""

    @abstractmethod
    def job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def jobs(
        self, service: str, offset: int = 0, limit: int | None = None, status: str | None = None
    ) -> list[Job]:
        """The service's jobs, newest first."""

    @abstractmethod
    def count_jobs(self, service: str | None = None) -> dict[str, int]:
        """Number of jobs by status, for one service or all."""

    @abstractmethod
    def usage(self, start: float, end: float) -> list[Usage]:
        """By service: the jobs made from `start` to `end` (epoch seconds), and the time
        their attempts ran in it (one still running, up to now)."""

    @abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]: ...

    @abstractmethod
    def queued_by_pool(self) -> dict[str, int]:
        """Queued jobs per pool."""

    @abstractmethod
    def delete_jobs(self, service: str, statuses: Iterable[str]) -> int: ...

    @abstractmethod
    def delete_job(self, job_id: str) -> bool: ...

    # -- lineage ------------------------------------------------------------
    # -- lineage: the jobs that descend from one original input ---------------------------
    @abstractmethod
    def origin(self, job_id: str) -> Event | None:
        """The event of the original input that the job descends from."""

    @abstractmethod
    def family_busy(self, origin: int) -> bool:
        """Whether a job descending from the original input `origin` (an event id) is
        queued or running."""

    @abstractmethod
    def family(self, origin: int) -> list[Job]:
        """Every job descending from the original input `origin`, oldest first."""

    @abstractmethod
    def origins(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The original input (an event id) each of these jobs descends from, by job;
        unknown jobs are left out."""

    @abstractmethod
    def family_counts(self, origins: Sequence[int]) -> list[tuple[int, str, str, int]]:
        """(origin, service, status, number of jobs) of the families of these original
        inputs, in the order their first jobs were made."""

    @abstractmethod
    def settled_origins(self, service: str, since: float) -> list[Event]:
        """Original inputs whose families' first jobs were made at `since` or later,
        with an ended job of `service` and no job of theirs queued or running."""

    @abstractmethod
    def outputs(self, job_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(job id, provider, key) of every output stored by these jobs."""

    @abstractmethod
    def record_output(self, source: str, key: str, job_id: str, attempt: int | None = None) -> None:
        """Remember that `job_id` writes the object `key` (before it is written). With
        `attempt`, only while that is the job's running attempt: else FencedError, and the
        output must not be written (a late attempt of a job that runs again elsewhere)."""

    @abstractmethod
    def producer(self, source: str, key: str) -> Job | None:
        """The job that last wrote this object, if a job did."""

    @abstractmethod
    def producers(self, source: str, keys: Sequence[str]) -> dict[str, Job]:
        """producer() of many objects at once: those a job wrote, by key."""

    # -- small settings that must persist -----------------------------------
    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def first_meta(self, key: str, value: str) -> str:
        """Set `key` to `value` unless it has a value; answers the one it has then. Of
        control planes that race to set it, one wins and all get its value."""

    def listen(self, ended: Callable[[str], None]) -> bool:
        """Call `ended(job id)` whenever a job someone waits for (a /run job) ends for good,
        on any control plane on the store, until it closes (a wake-up: one may be missed,
        and callers poll too). False when the store cannot tell (its jobs end on this
        control plane alone)."""
        return False

    def hold_sole(self) -> bool:
        """Hold the store for this control plane while it runs; False when another holds
        it. A store in the data folder is held with the folder (its lock), so this one
        has nothing more to take."""
        return True

    def close(self) -> None:
        """Release the underlying connection."""
