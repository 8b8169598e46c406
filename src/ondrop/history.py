"""The last hour of a platform's jobs, minute by minute: what the dashboard plots.

Read from the store's jobs (their creation, latest start and end): jobs that ended per
minute by status, jobs started, the queue's depth at each minute's end, and the
percentiles of landing-to-start and run time of the jobs that ended in the window.
A job's latest attempt is what counts, so a retried job's wait includes its retries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ondrop.store.base import CANCELLED, FAILED, SUCCEEDED, Job, Store

WINDOW_MAX = 24 * 60  # minutes one answer may span
PER_SERVICE = 20_000  # the newest jobs of a service read for one answer
PERCENTILES = (50, 90, 99)


def history(store: Store, services: Iterable[str], minutes: int, now: float) -> dict[str, Any]:
    start = (math.floor(now / 60) - minutes + 1) * 60
    jobs = [
        job
        for name in services
        for job in store.jobs(name, limit=PER_SERVICE)
        if job.finished_at is None or job.finished_at >= start
    ]
    rows = []
    for i in range(minutes):
        low, high = start + 60 * i, start + 60 * (i + 1)
        ended = [j for j in jobs if j.finished_at is not None and low <= j.finished_at < high]
        began = [j for j in jobs if j.started_at is not None and low <= j.started_at < high]
        rows.append(
            {
                "start": low,
                "succeeded": sum(j.status == SUCCEEDED for j in ended),
                "failed": sum(j.status == FAILED for j in ended),
                "cancelled": sum(j.status == CANCELLED for j in ended),
                "started": len(began),
                "queued": sum(_waiting_at(j, min(high, now)) for j in jobs),
            }
        )
    waits, runs = [], []
    for job in jobs:
        if job.started_at is not None and job.finished_at is not None:
            waits.append(job.started_at - job.created_at)
            runs.append(job.finished_at - job.started_at)
    return {
        "minutes": rows,
        "wait_seconds": _percentiles(waits),
        "run_seconds": _percentiles(runs),
        "jobs": len(jobs),
    }


def _waiting_at(job: Job, when: float) -> bool:
    """Whether `job` was queued at `when`: made by then, not started nor ended yet."""
    if job.created_at > when:
        return False
    began = job.started_at if job.started_at is not None else job.finished_at
    return began is None or began > when


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(max(0.0, v) for v in values)
    if not ordered:
        return {f"p{p}": None for p in PERCENTILES}
    return {
        f"p{p}": round(ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)], 3)
        for p in PERCENTILES
    }
