"""Chains: the work that some jobs belong to, down every service their outputs feed.

A job belongs to the family of the original input it descends from (the file that was
dropped or uploaded, or the body of an invocation). Followed from the jobs an upload
answered, the families say what `ondrop put --wait` and `ondrop wait` show: per stage
(service) how many jobs are in each status, whether any is still to come, and which
failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ondrop.errors import NotFoundError
from ondrop.intake import Intake
from ondrop.store.base import FAILED, QUEUED, RUNNING, Job, Store

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "refused")
FAILED_SHOWN = 100  # failed jobs named in full; the counts have them all


@dataclass
class Stage:
    """One service's jobs in the followed families, by status."""

    service: str
    jobs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))


@dataclass(frozen=True)
class Chains:
    """Where the followed families stand. `busy`: a job is queued or running, or one is
    still to start (a service that collects a family once all of it has ended)."""

    busy: bool
    stages: list[Stage]
    failed: list[Job]


def follow(store: Store, intake: Intake, job_ids: Sequence[str]) -> Chains:
    """The families of the original inputs these jobs descend from."""
    origins = store.origins(job_ids)
    unknown = [j for j in dict.fromkeys(job_ids) if j not in origins]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if unknown[5:] else "")
        raise NotFoundError(f"no such job: {shown} (removed, or never made)")
    wanted = sorted(set(origins.values()))
    stages: dict[str, Stage] = {}
    busy: set[int] = set()
    ran: dict[int, set[str]] = {origin: set() for origin in wanted}
    for origin, service, status, count in store.family_counts(wanted):
        stage = stages.setdefault(service, Stage(service))
        stage.jobs[status] = stage.jobs.get(status, 0) + count
        ran[origin].add(service)
        if status in (QUEUED, RUNNING):
            busy.add(origin)
    waiting = any(_collection_due(store, intake, o, ran[o]) for o in wanted if o not in busy)
    return Chains(
        busy=bool(busy) or waiting,
        stages=list(stages.values()),
        failed=_failed(store, wanted) if any(s.jobs[FAILED] for s in stages.values()) else [],
    )


def _collection_due(store: Store, intake: Intake, origin: int, services: set[str]) -> bool:
    """Whether the ended family of `origin` is yet to be collected: its last job's end is
    recorded just before the collecting job is made."""
    if not any(s.collect in services and s.name not in services for s in intake.services.all()):
        return False  # nothing collects it, or what does has run already
    event = store.event(origin)
    family = store.family(origin)  # as it is now: a collecting job may have been made
    if any(j.status in (QUEUED, RUNNING) for j in family):
        return True
    return event is not None and bool(intake.collections_due(event, family))


def _failed(store: Store, origins: list[int]) -> list[Job]:
    found: list[Job] = []
    for origin in origins:
        found += [j for j in store.family(origin) if j.status == FAILED]
        if len(found) >= FAILED_SHOWN:
            break
    return found[:FAILED_SHOWN]
