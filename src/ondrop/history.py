"""The last hour of a platform's jobs, minute by minute: what the dashboard plots.

Read from the store's jobs (their creation, latest start and end): jobs that ended per
minute by status, jobs started, the queue's depth at each minute's end, and the
percentiles of landing-to-start and run time of the jobs that ended in the window.
A job's latest attempt is what counts, so a retried job's wait includes its retries; a
job queued again for a retry (the store keeps only its latest start) is counted in the
queue of the last sample, now, and not before.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ondrop.store.base import CANCELLED, FAILED, QUEUED, SUCCEEDED, Store

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
    ended = {status: [0] * minutes for status in (SUCCEEDED, FAILED, CANCELLED)}
    started = [0] * minutes
    # the queue is sampled at each minute's end (the last one's: now)
    ends = [min(start + 60 * (i + 1), now) for i in range(minutes)]
    queued = [0] * (minutes + 1)  # differences: a job waits from one sample to another
    waits, runs = [], []
    for job in jobs:
        if job.finished_at is not None and job.status in ended:
            _count(ended[job.status], job.finished_at, start)
        if job.started_at is not None:
            _count(started, job.started_at, start)
        if job.status == QUEUED and job.started_at is not None:  # waiting for a retry
            first, until = minutes - 1, minutes
        else:
            began = job.started_at if job.started_at is not None else job.finished_at
            first = bisect.bisect_left(ends, job.created_at)
            until = minutes if began is None else bisect.bisect_left(ends, began)
        if first < until:
            queued[first] += 1
            queued[until] -= 1
        if job.started_at is not None and job.finished_at is not None:
            waits.append(job.started_at - job.created_at)
            runs.append(job.finished_at - job.started_at)
    depth = list(itertools.accumulate(queued[:minutes]))
    rows = [
        {
            "start": start + 60 * i,
            "succeeded": ended[SUCCEEDED][i],
            "failed": ended[FAILED][i],
            "cancelled": ended[CANCELLED][i],
            "started": started[i],
            "queued": depth[i],
        }
        for i in range(minutes)
    ]
    return {
        "minutes": rows,
        "wait_seconds": _percentiles(waits),
        "run_seconds": _percentiles(runs),
        "jobs": len(jobs),
    }


def _count(counts: list[int], when: float, start: float) -> None:
    """One more in the minute of `when`, if it is one of `counts`' (from `start`)."""
    minute = math.floor((when - start) / 60)
    if 0 <= minute < len(counts):
        counts[minute] += 1


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(max(0.0, v) for v in values)
    if not ordered:
        return {f"p{p}": None for p in PERCENTILES}
    return {
        f"p{p}": round(ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)], 3)
        for p in PERCENTILES
    }
