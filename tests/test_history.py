"""history() on jobs given directly: a job waiting for a retry is in the queue now, and
the queue's depth before it comes from jobs' creation and start."""

from __future__ import annotations

from typing import cast

from ondrop.history import history
from ondrop.store.base import QUEUED, RUNNING, SUCCEEDED, Job, Store

NOW = 6000.0 + 30  # half a minute into the minute that starts at 6000


class Jobs:
    """A store that only lists jobs."""

    def __init__(self, jobs: list[Job]) -> None:
        self._jobs = jobs

    def jobs(self, service: str, limit: int) -> list[Job]:
        return [j for j in self._jobs if j.service == service][:limit]


def test_a_job_queued_again_for_a_retry_counts_in_the_queue_now() -> None:
    jobs = [
        # waited from 5700 to 5820, ran to 5850
        Job("done", "s", 1, SUCCEEDED, 1, 5700.0, started_at=5820.0, finished_at=5850.0),
        # ran once from 5710 and now waits for its retry
        Job("again", "s", 2, QUEUED, 1, 5705.0, started_at=5710.0),
        Job("new", "s", 3, QUEUED, 0, 5990.0),  # waits since 5990
        Job("busy", "s", 4, RUNNING, 1, 5600.0, started_at=5605.0),
    ]
    got = history(cast(Store, Jobs(jobs)), ["s"], 5, NOW)
    queued = [m["queued"] for m in got["minutes"]]
    # samples at 5820 (minute 5760), 5880, 5940, 6000 and now
    assert [m["start"] for m in got["minutes"]] == [5760, 5820, 5880, 5940, 6000]
    assert queued == [0, 0, 0, 1, 2]
    assert sum(m["succeeded"] for m in got["minutes"]) == 1
    assert got["wait_seconds"]["p50"] == 120.0 and got["run_seconds"]["p50"] == 30.0
