"""The retry and fallback policy: what becomes of a job after one attempt, from the attempt's
outcome and cause alone (a pure function: the same answer on any replica).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from ondrop.fdl.models import Service
from ondrop.jobs import Cause
from ondrop.pools.router import BATCH, FAAS
from ondrop.store.base import CANCELLED, FAILED, INTERRUPTED, SUCCEEDED, UNAVAILABLE, Outcome

STORE_RETRY_CAP = 60.0  # longest wait between attempts while a store is down


def backoff(attempt: int) -> float:
    """Seconds before retrying after failed attempt number `attempt`: 1, 2, 4 ... 300, ±50%."""
    base = min(300.0, 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


@dataclass(frozen=True)
class Step:
    """What to record for the attempt, and when (None: never) and where the job runs next."""

    outcome: Outcome
    retry_at: float | None = None
    pool: str | None = None  # None: the pool it ran in


def next_step(
    outcome: Outcome,
    *,
    pool: str,
    service: Service | None,
    attempt: int,
    failures: int,
    now: float,
    cancelled: str | None = None,
) -> Step:
    """The job's next step after attempt number `attempt` ended with `outcome` in `pool`.
    `failures` counts the job's earlier attempts that failed by its own fault; `cancelled`
    is why a user cancelled it while it ran, if one did."""
    if cancelled is not None and outcome.status != SUCCEEDED:
        return Step(dataclasses.replace(outcome, status=CANCELLED, reason=cancelled))
    if outcome.status == INTERRUPTED or outcome.cause in (Cause.STOPPED, Cause.LOST):
        # The platform stopped it, or its node was lost: again, at once, elsewhere if need be.
        return Step(dataclasses.replace(outcome, status=INTERRUPTED), now)
    if outcome.cause is Cause.UNAVAILABLE:
        # A store was down: wait and try again, however long it takes, without using up
        # the service's retries.
        outcome = dataclasses.replace(outcome, status=UNAVAILABLE)
        return Step(outcome, now + min(STORE_RETRY_CAP, backoff(attempt)))
    if outcome.status != FAILED or service is None:
        return Step(outcome)
    cause = outcome.cause or Cause.EXIT
    if service.mode == "hybrid" and pool == FAAS and cause.outgrown:
        return Step(outcome, now, BATCH)  # it outgrew faas: batch runs it without the limits
    if failures + 1 <= service.retries:
        return Step(outcome, now + backoff(failures + 1))
    return Step(outcome)
