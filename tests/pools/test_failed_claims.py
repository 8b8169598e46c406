"""A claim the store fails gives back what the pool reserved for it: capacity is whole
again and the next jobs run."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ondrop.backends.stub import StubBackend
from ondrop.errors import StoreError
from ondrop.events.base import object_event
from ondrop.fdl.models import Service
from ondrop.jobs import JobSpec
from ondrop.pools.base import Admission, Slots
from ondrop.pools.batch import BatchCapacity
from ondrop.pools.dispatch import Dispatcher
from ondrop.pools.faas import FaasLimits
from ondrop.pools.waiters import Waiters
from ondrop.services import Services
from ondrop.storage import LocalStorage, Providers
from ondrop.store.base import QUEUED, RUNNING, SUCCEEDED, Claim, Job, NewJob, Outcome, Quota
from ondrop.store.sqlite import SQLiteStore
from tests.support.stored import saved


class FailingCommit:
    """The store's connection, whose next COMMIT fails as a full disk would (SQLite may
    leave the transaction open then)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.armed and sql.strip().upper() == "COMMIT":
            self.armed = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class FlakyClaims(SQLiteStore):
    """SQLite whose next claim fails: after `accept` reserved `after` jobs ("accept"), or
    at its COMMIT ("commit")."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.connection = FailingCommit(self._db)
        self._db = self.connection  # type: ignore[assignment]
        self.fail: str | None = None
        self.after = 1
        self.failed = 0

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
        fail, self.fail = self.fail, None
        reserved = 0

        def accepting(job: Job) -> bool:
            nonlocal reserved
            taken = accept is None or accept(job)
            reserved += taken
            if fail == "accept" and reserved >= self.after:
                raise StoreError("store s.db: disk I/O error")
            return taken

        self.connection.armed = fail == "commit"
        try:
            return super().claim(limit, caps, now, pool, accepting, owner, lease_until, quotas)
        except StoreError:
            self.failed += 1
            raise


class Rig:
    def __init__(self, tmp_path: Path, admission: Admission, slots: int) -> None:
        self.store = FlakyClaims(tmp_path / "s.db")
        storage = LocalStorage("local.default", tmp_path / "storage")
        self.services = Services(
            self.store, Providers({"local.default": storage}), lambda s: (None, None)
        )
        self.admission = admission
        self.slots = Slots(slots)
        self.ran: list[str] = []
        self.pool = Dispatcher(
            self.store,
            self.services,
            admission,
            StubBackend(self._execute),
            Waiters(self.store),
            self.slots,
        )

    def _execute(self, spec: JobSpec, ended: object) -> Outcome:
        self.ran.append(spec.job_id)
        return Outcome(SUCCEEDED, 0)

    def add(self, service: str, n: int, pool: str = "faas") -> list[str]:
        ids = []
        saved(self.store, service)
        for i in range(n):
            event = object_event("local.default", f"{service}/{i}", "1", 1)
            (job,) = self.store.add_event(event, [NewJob(f"{service}-{i}", service, pool=pool)])
            ids.append(job.id)
        self.pool.wake()
        return ids

    def wait_done(self, timeout: float = 15) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.store.count_jobs()
            if not counts.get(QUEUED) and not counts.get(RUNNING):
                return counts
            time.sleep(0.02)
        raise AssertionError(
            f"jobs still pending: {self.store.count_jobs()}; capacity "
            f"{self.admission.describe()}, {self.slots.free()} slot(s) free"
        )

    def wait_idle(self) -> None:
        """Until the last job's thread has given its slot back."""
        deadline = time.monotonic() + 10
        while self.pool.running() or self.slots.free() != self.slots.total:
            assert time.monotonic() < deadline, f"{self.slots.free()} slot(s) free"
            time.sleep(0.02)


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.pool.stop(1.0, lambda: None)


def start(rigs: list[Rig], rig: Rig, **service: Any) -> Rig:
    rig.services.apply([Service.model_validate({"name": "a", "script": "true", **service})])
    rigs.append(rig)
    return rig


@pytest.mark.parametrize("where", ["accept", "commit"])
def test_a_faas_claim_the_store_fails_gives_its_slots_back_and_the_next_jobs_run(
    tmp_path: Path, rigs: list[Rig], where: str
) -> None:
    rig = start(rigs, Rig(tmp_path, FaasLimits(2, 900.0, 1024**3), slots=2))
    rig.store.fail, rig.store.after = where, 2  # the whole pool was reserved for it
    ids = rig.add("a", 4)
    rig.pool.start()
    assert rig.wait_done() == {SUCCEEDED: 4}
    assert rig.store.failed == 1
    assert sorted(rig.ran) == sorted(ids)  # each once: the failed claim started none
    rig.wait_idle()
    assert rig.admission.describe()["running"] == 0


@pytest.mark.parametrize("where", ["accept", "commit"])
def test_a_batch_claim_the_store_fails_gives_its_gpu_cpus_and_memory_back(
    tmp_path: Path, rigs: list[Rig], where: str
) -> None:
    capacity = BatchCapacity(2.0, 1024**3, ["0"])
    rig = start(rigs, Rig(tmp_path, capacity, slots=4), mode="batch", gpu=1, cpu="2")
    rig.store.fail = where
    ids = rig.add("a", 3, pool="batch")
    rig.pool.start()
    assert rig.wait_done() == {SUCCEEDED: 3}
    assert rig.store.failed == 1
    assert sorted(rig.ran) == sorted(ids)
    rig.wait_idle()
    assert capacity.describe() == {
        "cpus": 2.0,
        "free_cpus": 2.0,
        "memory": "1Gi",
        "free_memory": "1Gi",
        "gpus": ["0"],
        "free_gpus": ["0"],
        "running": 0,
    }
