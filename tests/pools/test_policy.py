"""The retry and fallback policy decides on the attempt's typed cause, never on its text."""

from __future__ import annotations

from typing import Any

from ondrop.fdl.models import Service
from ondrop.jobs import Cause
from ondrop.pools.policy import backoff, next_step
from ondrop.store.base import CANCELLED, FAILED, INTERRUPTED, SUCCEEDED, UNAVAILABLE, Outcome

NOW = 1000.0


def service(**fields: Any) -> Service:
    return Service.model_validate({"name": "s", "script": "true", **fields})


def step(outcome: Outcome, pool: str = "faas", failures: int = 0, **fields: Any) -> Any:
    return next_step(
        outcome, pool=pool, service=service(**fields), attempt=1, failures=failures, now=NOW
    )


def test_backoff_grows_and_is_jittered() -> None:
    assert 0.5 <= backoff(1) <= 1.5
    assert 4 <= backoff(4) <= 12
    assert backoff(30) <= 450


def test_a_hybrid_job_goes_to_batch_on_a_timeout_or_oom_cause_whatever_the_words() -> None:
    for cause in (Cause.TIMEOUT, Cause.OOM):
        moved = step(Outcome(FAILED, None, "the clock ran out, sorry", cause=cause), mode="hybrid")
        assert (moved.retry_at, moved.pool) == (NOW, "batch")
    # the words alone move nothing: a script may print anything
    stays = step(Outcome(FAILED, 1, "timed out after 1 s", cause=Cause.EXIT), mode="hybrid")
    assert (stays.retry_at, stays.pool) == (None, None)
    # nor does a timeout on batch, or of a service that is not hybrid
    assert step(Outcome(FAILED, cause=Cause.TIMEOUT), "batch", mode="hybrid").pool is None
    assert step(Outcome(FAILED, cause=Cause.TIMEOUT)).pool is None


def test_a_lost_node_or_a_stop_runs_the_job_again_at_once_without_counting() -> None:
    for cause in (Cause.LOST, Cause.STOPPED):
        again = step(Outcome(FAILED, None, "node 127.0.0.3 was lost", cause=cause), retries=0)
        assert again.outcome.status == INTERRUPTED and again.retry_at == NOW


def test_a_store_that_was_down_waits_and_tries_again_without_counting() -> None:
    later = step(Outcome(FAILED, None, "down", cause=Cause.UNAVAILABLE), retries=0)
    assert later.outcome.status == UNAVAILABLE
    assert later.retry_at is not None and NOW < later.retry_at <= NOW + 60


def test_the_jobs_own_failures_count_against_its_retries() -> None:
    failed = Outcome(FAILED, 2, "exit status 2", cause=Cause.EXIT)
    first = step(failed, failures=0, retries=2)
    assert first.retry_at is not None and first.retry_at > NOW
    assert step(failed, failures=1, retries=2).retry_at is not None
    assert step(failed, failures=2, retries=2).retry_at is None


def test_a_cancel_while_running_ends_it_cancelled_unless_it_succeeded() -> None:
    failed = next_step(
        Outcome(FAILED, None, "stopped", cause=Cause.STOPPED),
        pool="faas",
        service=service(),
        attempt=1,
        failures=0,
        now=NOW,
        cancelled="cancelled by the user",
    )
    assert (failed.outcome.status, failed.outcome.reason) == (CANCELLED, "cancelled by the user")
    done = next_step(
        Outcome(SUCCEEDED, 0),
        pool="faas",
        service=service(),
        attempt=1,
        failures=0,
        now=NOW,
        cancelled="too late",
    )
    assert done.outcome.status == SUCCEEDED and done.retry_at is None
