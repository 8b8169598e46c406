"""A control plane's presence in its store: it is listed while alive, its claims are
leased to it, it takes back the attempts of one whose leases ran out, and its id is the
same across restarts of its data folder."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import httpx

from ondrop.events.base import object_event
from ondrop.jobs import Cause
from ondrop.platform import Platform
from ondrop.replicas import LEASE, replica_id
from ondrop.store.base import INTERRUPTED, QUEUED, NewJob
from ondrop.store.sqlite import SQLiteStore
from tests.faults.test_locked_store import apply_copy
from tests.support.stored import saved
from tests.support.waiting import wait_for


def test_status_lists_the_live_control_planes(api: httpx.Client, platform: Platform) -> None:
    (replica,) = api.get("/system/status").json()["replicas"]
    assert replica["id"] == platform.replica
    assert replica["since"] <= replica["seen"] <= time.time()


def test_claims_are_leased_to_this_control_plane(api: httpx.Client, platform: Platform) -> None:
    apply_copy(api)
    put = api.put("/system/files/local.default/in/a.txt", content=b"a")
    (job,) = [j["job"] for j in put.json()["jobs"]]
    wait_for(lambda: (j := platform.store.job(job)) is not None and j.status == "succeeded")
    with contextlib.closing(sqlite3.connect(platform.data / "ondrop.db")) as db:
        ((owner, until, started),) = db.execute(
            "SELECT owner, lease_until, started_at FROM attempts WHERE job_id = ?", (job,)
        ).fetchall()
    assert owner == platform.replica
    assert started < until <= started + LEASE + 1


def test_the_attempts_of_a_control_plane_that_died_are_taken_back(platform: Platform) -> None:
    other = SQLiteStore(platform.data / "ondrop.db")  # a control plane that then dies
    try:
        event = object_event("local.default", "in/lost", "1", 1)
        # In a pool no worker here claims, so that what the test sees is the takeover alone.
        saved(other, "svc")
        (job,) = other.add_event(event, [NewJob("lost", "svc", pool="elsewhere")])
        now = time.time()
        other.claim(1, {}, now, pool="elsewhere", owner="dead", lease_until=now + LEASE)
        platform.heartbeat.beat()
        assert platform.store.job(job.id).status == "running"  # type: ignore[union-attr]
        other.renew("dead", now - 1)  # its last renewal, long ago
        platform.heartbeat.beat()  # what its thread does every few seconds
        assert platform.store.job(job.id).status == QUEUED  # type: ignore[union-attr]
        (attempt,) = platform.store.attempts(job.id)
        assert (attempt.status, attempt.cause) == (INTERRUPTED, Cause.STOPPED)
    finally:
        other.close()


def test_a_control_plane_keeps_its_id_across_restarts(tmp_path: Path) -> None:
    first = replica_id(tmp_path)
    assert first and replica_id(tmp_path) == first
    other = tmp_path / "other"
    other.mkdir()
    assert replica_id(other) != first
