"""The queries every SQL store shares, written once: SQLite's and PostgreSQL's stores
differ only in how they connect, begin a transaction, lock what a claim takes, and say
what a failure means. Statements use `?` for their parameters (each store binds its
own way) and SQL both databases speak: ON CONFLICT, RETURNING, WITH RECURSIVE.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar

from ondrop.errors import FencedError, NotFoundError
from ondrop.events.base import Event
from ondrop.jobs import SYNC_PRIORITY, Cause
from ondrop.store.base import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    REFUSED,
    RUNNING,
    SUCCEEDED,
    Attempt,
    Claim,
    Job,
    NewJob,
    Outcome,
    Quota,
    Replica,
    Store,
    StoredService,
    Usage,
)

Row = Sequence[Any]
T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """A transaction's connection: what `_tx` gives the queries."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Cursor: ...


# The tables, written once in each store's types: {time} seconds since the epoch,
# {integer} a 64-bit count, {serial} a key the database numbers, {name} text compared byte
# by byte (names and keys, ordered alike everywhere).
_TABLES = """
CREATE TABLE IF NOT EXISTS services (
    name {name} PRIMARY KEY,
    definition TEXT NOT NULL,
    token TEXT NOT NULL,
    created_at {time} NOT NULL,
    updated_at {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id {serial},
    source {name} NOT NULL,
    key {name} NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    time {time} NOT NULL,
    size {integer},
    body TEXT NOT NULL,
    payload TEXT,
    parent_job TEXT,
    origin {integer},
    UNIQUE (source, key, version)
);
CREATE TABLE IF NOT EXISTS jobs (
    seq {serial},
    id TEXT NOT NULL UNIQUE,
    service {name} NOT NULL,
    event_id {integer} NOT NULL REFERENCES events (id),
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    pool TEXT NOT NULL DEFAULT 'faas',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at {time} NOT NULL,
    started_at {time},
    finished_at {time},
    run_after {time} NOT NULL DEFAULT 0,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    UNIQUE (service, event_id)
);
CREATE INDEX IF NOT EXISTS jobs_lane ON jobs (status, pool, service, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, pool, run_after);
CREATE INDEX IF NOT EXISTS jobs_by_service ON jobs (service, seq);
CREATE INDEX IF NOT EXISTS jobs_event ON jobs (event_id);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at {time} NOT NULL,
    finished_at {time},
    status TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    log TEXT NOT NULL DEFAULT '',
    pool TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    cause TEXT,
    handle TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    lease_until {time},
    cancel TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, number)
);
CREATE TABLE IF NOT EXISTS outputs (
    source {name} NOT NULL,
    key {name} NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    since {time} NOT NULL,
    seen {time} NOT NULL
);
"""


# Indexes on columns a store made by an older ondrop gains on open: made after that.
LATER_INDEXES = """
CREATE INDEX IF NOT EXISTS events_origin ON events (origin);
CREATE INDEX IF NOT EXISTS attempts_running ON attempts (status, owner);
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (service) WHERE status = 'running';
"""


def tables(time: str, integer: str, serial: str, name: str) -> str:
    """The CREATE statements of the tables and indexes, in one database's types."""
    return _TABLES.format(time=time, integer=integer, serial=serial, name=name)


_SERVICE_COLUMNS = "name, definition, token, created_at, updated_at"
_EVENT_FIELDS = (
    "id",
    "source",
    "key",
    "version",
    "kind",
    "time",
    "size",
    "body",
    "payload",
    "parent_job",
    "origin",
)
_EVENT_COLUMNS = ", ".join(_EVENT_FIELDS)
_ORIGIN_COLUMNS = ", ".join(f"o.{name}" for name in _EVENT_FIELDS)  # of events as `o`
JOINED_EVENT_COLUMNS = ", ".join(f"e.{name}" for name in _EVENT_FIELDS)  # as `e`
_ATTEMPT_COLUMNS = """pool, job_id, number, started_at, finished_at, status, exit_code,
    reason, log, node, cause, handle"""
JOB_COLUMNS = """j.id, j.service, j.event_id, j.status, j.attempts, j.created_at, j.started_at,
    j.finished_at, j.exit_code, j.reason, j.priority, j.pool, e.key, e.parent_job, j.node"""


# An attempt number used before (the job's attempt was taken back, then claimed again
# by an older view of it) starts afresh.
ATTEMPT_RESET = """ON CONFLICT (job_id, number) DO UPDATE SET
    started_at = excluded.started_at, status = excluded.status, pool = excluded.pool,
    owner = excluded.owner, lease_until = excluded.lease_until, finished_at = NULL,
    exit_code = NULL, reason = '', log = '', node = '', cause = NULL, handle = '', cancel = ''"""
# Running jobs counted per service for the services' turns (a capped one's up to its cap):
# enough to tell a service that runs few from one that runs many, at a bounded cost.
FAIR_COUNT = 64


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """`items` in pieces small enough for one statement's parameters (SQLite's limit)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(items: Sized) -> str:
    return ",".join("?" * len(items))


def _job(row: Row) -> Job:
    return Job(
        id=row[0],
        service=row[1],
        event_id=row[2],
        status=row[3],
        attempts=row[4],
        created_at=row[5],
        started_at=row[6],
        finished_at=row[7],
        exit_code=row[8],
        reason=row[9],
        priority=row[10],
        pool=row[11],
        input_key=row[12],
        parent_job=row[13],
        node=row[14],
    )


def _event(row: Row) -> Event:
    """An event from the columns _EVENT_FIELDS names, in that order."""
    event_id, source, key, version, kind, when, size, body, payload, parent, origin = row
    return Event(
        source=source,
        key=key,
        version=version,
        kind=kind,
        time=when,
        size=size,
        body=body,
        payload=payload,
        parent_job=parent,
        id=event_id,
        origin=origin if origin is not None else event_id,
    )


class SQLStore(Store):
    """A Store on a SQL database; a subclass gives `_tx` and `_read`."""

    # After a claim's SELECT: what keeps two control planes from taking the same job
    # (PostgreSQL's row locks; nothing on SQLite, whose writer is alone).
    SKIP_LOCKED: ClassVar[str] = ""
    LOCK_ROWS: ClassVar[str] = ""  # after a SELECT: hold its rows until the commit
    # What a job is recorded with: its service exists (held so until the commit where
    # control planes share the store, so that a delete of it waits, then takes the job too).
    _SERVICE_EXISTS: ClassVar[str] = "WHERE EXISTS (SELECT 1 FROM services WHERE name = ?)"
    # A column of finish's read-back of the job that tells listening control planes it
    # ended (PostgreSQL's NOTIFY, sent on commit); none on a store of one's own.
    ENDED_NOTICE: ClassVar[str] = ""
    NO_LIMIT: ClassVar[int | None] = -1  # a LIMIT that limits nothing

    def __init__(self) -> None:
        # Which service this control plane served last (a counter), for ties.
        self._turns = threading.Lock()
        self._served: dict[str, int] = {}
        self._turn = 0

    @abstractmethod
    def _tx(self, durable: bool = True) -> AbstractContextManager[Tx]:
        """One write transaction. `durable` ones (what the platform acknowledges: events,
        services) reach the disk before they return; the others (a job's progress) are
        safe from a crash of the process at once, and from one of the machine with the
        next durable one: a job whose end is lost that way only runs again."""

    @abstractmethod
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """The rows of one read, which sees every transaction committed before it."""

    # -- services -------------------------------------------------------------
    def save_services(self, services: Sequence[StoredService]) -> None:
        with self._tx() as db:
            for s in services:
                db.execute(
                    """INSERT INTO services (name, definition, token, created_at, updated_at)
                       VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                         token = excluded.token, updated_at = excluded.updated_at""",
                    (s.name, json.dumps(s.definition), s.token, s.created_at, s.updated_at),
                )
            self._changed(db)

    @staticmethod
    def _service(row: Row) -> StoredService:
        return StoredService(row[0], json.loads(row[1]), row[2], row[3], row[4])

    def services(self) -> list[StoredService]:
        rows = self._read(f"SELECT {_SERVICE_COLUMNS} FROM services ORDER BY name")
        return [self._service(r) for r in rows]

    def service(self, name: str) -> StoredService | None:
        rows = self._read(f"SELECT {_SERVICE_COLUMNS} FROM services WHERE name = ?", (name,))
        return self._service(rows[0]) if rows else None

    def delete_service(self, name: str) -> bool:
        with self._tx() as db:
            # The service first: a job being recorded for it (which holds its row, see
            # _SERVICE_EXISTS) is waited for, and then deleted with the others.
            deleted = db.execute("DELETE FROM services WHERE name = ?", (name,)).rowcount > 0
            db.execute(
                "DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE service = ?)",
                (name,),
            )
            db.execute("DELETE FROM jobs WHERE service = ?", (name,))
            self._changed(db)
            return deleted

    @staticmethod
    def _changed(db: Tx) -> None:
        """Bump the services' generation, in the transaction that changed them."""
        db.execute(
            """INSERT INTO meta (key, value) VALUES ('generation', '1')
               ON CONFLICT (key) DO UPDATE SET
                 value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"""
        )

    def generation(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'generation'")
        return int(rows[0][0]) if rows else 0

    # -- events and jobs --------------------------------------------------------
    def add_events(self, batch: Sequence[tuple[Event, Sequence[NewJob]]]) -> list[Job]:
        created: list[Job] = []
        with self._tx() as db:
            for event, jobs in batch:
                created += self._add_event(db, event, jobs)
        return created

    @staticmethod
    def _insert_event(db: Tx, event: Event) -> int | None:
        """Insert `event` with its origin (given, its parent job's, or itself); its id, or
        None when the same (source, key, version) is recorded already."""
        cursor = db.execute(
            """INSERT INTO events (source, key, version, kind, time, size, body, payload,
                                   parent_job, origin)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?,
                 (SELECT COALESCE(e.origin, e.id) FROM jobs j JOIN events e ON e.id = j.event_id
                  WHERE j.id = ?)))
               ON CONFLICT (source, key, version) DO NOTHING RETURNING id""",
            (
                event.source,
                event.key,
                event.version,
                event.kind,
                event.time,
                event.size,
                event.body,
                event.payload,
                event.parent_job,
                event.origin,
                event.parent_job,
            ),
        )
        row = cursor.fetchone()
        if row is None:  # recorded before
            return None
        event_id = int(row[0])
        db.execute("UPDATE events SET origin = id WHERE id = ? AND origin IS NULL", (event_id,))
        return event_id

    @classmethod
    def _add_event(cls, db: Tx, event: Event, jobs: Sequence[NewJob]) -> list[Job]:
        event_id = cls._insert_event(db, event)
        if event_id is None:
            return []
        created = []
        for new in jobs:
            finished = None if new.status == QUEUED else event.time  # refused: ended as made
            inserted = db.execute(
                f"""INSERT INTO jobs (id, service, event_id, status, priority, pool,
                                      created_at, finished_at, reason)
                    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? {cls._SERVICE_EXISTS}""",
                (
                    new.id,
                    new.service,
                    event_id,
                    new.status,
                    new.priority,
                    new.pool,
                    event.time,
                    finished,
                    new.reason,
                    new.service,
                ),
            ).rowcount
            if not inserted:
                continue  # its service was deleted meanwhile (by another control plane)
            created.append(
                Job(
                    new.id,
                    new.service,
                    event_id,
                    new.status,
                    0,
                    event.time,
                    finished_at=finished,
                    reason=new.reason,
                    priority=new.priority,
                    pool=new.pool,
                    input_key=event.key,
                    parent_job=event.parent_job,
                )
            )
        return created

    def ensure_job(self, event: Event, job: NewJob) -> tuple[Job, bool]:
        with self._tx() as db:
            self._insert_event(db, event)
            (event_id,) = db.execute(
                "SELECT id FROM events WHERE source = ? AND key = ? AND version = ?",
                (event.source, event.key, event.version),
            ).fetchone()
            created = (
                db.execute(
                    f"""INSERT INTO jobs (id, service, event_id, status, priority, pool,
                                          created_at)
                        SELECT ?, ?, ?, ?, ?, ?, ? {self._SERVICE_EXISTS}
                        ON CONFLICT (service, event_id) DO NOTHING""",
                    (
                        job.id,
                        job.service,
                        event_id,
                        QUEUED,
                        job.priority,
                        job.pool,
                        time.time(),
                        job.service,
                    ),
                ).rowcount
                > 0
            )
            row = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs j JOIN events e ON e.id = j.event_id "
                "WHERE j.service = ? AND j.event_id = ?",
                (job.service, event_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no service named {job.service!r}")
            return _job(row), created

    def seen(self, source: str, key: str, version: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM events WHERE source = ? AND key = ? AND version = ?",
                (source, key, version),
            )
        )

    def unseen(self, source: str, versions: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = set(versions)
        keys = sorted({key for key, _ in wanted})
        for chunk in _chunks(keys):
            rows = self._read(
                f"SELECT key, version FROM events WHERE source = ? AND key IN ({_marks(chunk)})",
                (source, *chunk),
            )
            wanted -= {(row[0], row[1]) for row in rows}
        return wanted

    def event(self, event_id: int) -> Event | None:
        rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def event_jobs(self, source: str, key: str, version: str) -> list[Job]:
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM jobs j JOIN events e ON e.id = j.event_id "
            "WHERE e.source = ? AND e.key = ? AND e.version = ? ORDER BY j.seq",
            (source, key, version),
        )
        return [_job(r) for r in rows]

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
        if limit <= 0:
            return []
        with self._tx(durable=False) as db:
            counted = sorted({*caps, *(s for quota in quotas for s in quota.needs)})
            if counted:
                # One claimer at a time counts a capped service's running jobs (PostgreSQL
                # locks its row until this claim commits; SQLite's writer is alone).
                db.execute(
                    f"SELECT name FROM services WHERE name IN ({_marks(counted)}) "
                    f"ORDER BY name{self.LOCK_ROWS}",
                    counted,
                )
            if quotas:
                accept = self._within(db, quotas, accept)
            chosen = self._choose(self._lanes(db, limit, caps, now, pool), limit, accept)
            claims = [
                Claim(
                    dataclasses.replace(
                        job,
                        status=RUNNING,
                        attempts=job.attempts + 1,
                        started_at=now,
                        finished_at=None,
                        node="",  # its new attempt's, not known yet
                    ),
                    job.attempts + 1,
                    event,
                )
                for job, event in chosen
            ]
            if claims:
                self._start_attempts(db, claims, now, owner, lease_until)
        self._took(claims)
        return claims

    def _took(self, claims: list[Claim]) -> None:
        """Note which services this control plane served, in order (for ties)."""
        with self._turns:
            for claim in claims:
                self._turn += 1
                self._served[claim.job.service] = self._turn

    @staticmethod
    def _due(pool: str | None, now: float) -> tuple[str, list[Any]]:
        """The WHERE of a claim's queued jobs (of `j`), and its parameters."""
        # (+run_after: walk the lane index in order and skip the few jobs waiting for a
        # retry, rather than gather every due job and sort them)
        where, args = "j.status = ? AND +j.run_after <= ?", [QUEUED, now]
        if pool is not None:
            where += " AND j.pool = ?"
            args.append(pool)
        return where, args

    def _lanes(
        self, db: Tx, limit: int, caps: Mapping[str, int], now: float, pool: str | None
    ) -> list[tuple[int, list[Row]]]:
        """For each service with due queued jobs: how many of its jobs run (counted up to
        FAIR_COUNT, or to its cap), and its next jobs (the most it may start now, at most
        `limit`), each row JOB_COLUMNS, the job's seq and JOINED_EVENT_COLUMNS."""
        where, args = self._due(pool, now)
        lanes = []
        for service in self._queued_services(db, pool):
            (running,) = db.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = '{RUNNING}' AND "
                "service = ? LIMIT ?) AS counted",
                (service, max(FAIR_COUNT, caps.get(service, 0))),
            ).fetchone()
            take = limit if service not in caps else min(limit, caps[service] - running)
            if take <= 0:
                continue
            rows = db.execute(
                f"SELECT {JOB_COLUMNS}, j.seq, {JOINED_EVENT_COLUMNS} "
                f"FROM jobs j JOIN events e ON e.id = j.event_id "
                f"WHERE {where} AND j.service = ? "
                f"ORDER BY j.priority DESC, j.seq LIMIT ?{self.SKIP_LOCKED}",
                [*args, service, take],
            ).fetchall()
            if rows:
                lanes.append((int(running), rows))
        return lanes

    def _within(
        self, db: Tx, quotas: Sequence[Quota], accept: Callable[[Job], bool] | None
    ) -> Callable[[Job], bool]:
        """`accept`, taking only jobs their owner's quota has room for beside what runs
        (counted now, under the services' locks) and what this claim took before."""
        of: dict[str, Quota] = {s: quota for quota in quotas for s in quota.needs}
        held: dict[str, tuple[int, float, int, int]] = {q.owner: (0, 0.0, 0, 0) for q in quotas}

        def add(service: str, count: int) -> None:
            quota = of[service]
            cpu, memory, gpu = quota.needs[service]
            jobs, cores, used, gpus = held[quota.owner]
            held[quota.owner] = (
                jobs + count,
                cores + cpu * count,
                used + memory * count,
                gpus + gpu * count,
            )

        services = sorted(of)
        for service, running in db.execute(
            f"SELECT service, COUNT(*) FROM jobs WHERE status = '{RUNNING}' "
            f"AND service IN ({_marks(services)}) GROUP BY service",
            services,
        ).fetchall():
            add(str(service), int(running))

        def within(job: Job) -> bool:
            quota = of.get(job.service)
            if quota is not None and not quota.fits(held[quota.owner], job.service):
                return False
            if accept is not None and not accept(job):
                return False
            if quota is not None:
                add(job.service, 1)
            return True

        return within

    def _choose(
        self,
        lanes: list[tuple[int, list[Row]]],
        limit: int,
        accept: Callable[[Job], bool] | None,
    ) -> list[tuple[Job, Event]]:
        """Up to `limit` of the lanes' jobs that `accept` takes, the lanes in turn: urgent
        first; then the service with the fewest jobs running (on every control plane) and,
        of those, the one this control plane served least lately, so that one service's
        backlog never holds another's jobs back for long; then the oldest."""
        ordered = sorted(
            lanes,
            key=lambda lane: (
                -lane[1][0][10],
                lane[0],
                self._served.get(lane[1][0][1], 0),
                lane[1][0][15],
            ),
        )
        queues = [[(_job(r), _event(r[16:])) for r in rows] for _, rows in ordered]
        chosen: list[tuple[Job, Event]] = []
        while len(chosen) < limit and any(queues):
            for queue in queues:
                if not queue or len(chosen) >= limit:
                    continue
                if accept is None or accept(queue[0][0]):
                    chosen.append(queue.pop(0))
                else:
                    queue.clear()  # a service's jobs ask alike: none of them fits now
        return chosen

    def _start_attempts(
        self, db: Tx, claims: list[Claim], now: float, owner: str, lease_until: float | None
    ) -> None:
        """Mark the claimed jobs running and insert their attempts, leased to `owner`."""
        # One statement for all of them, not one per job: each is a trip to the database.
        for chunk in _chunks([c.job.id for c in claims]):
            db.execute(
                f"""UPDATE jobs SET status = ?, attempts = attempts + 1, started_at = ?,
                    finished_at = NULL, node = ''
                    WHERE status = ? AND id IN ({_marks(chunk)})""",
                (RUNNING, now, QUEUED, *chunk),
            )
        for part in _chunks(claims, 100):  # 7 parameters each
            db.execute(
                "INSERT INTO attempts (job_id, number, started_at, status, pool, owner, "
                "lease_until) VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(part))
                + f" {ATTEMPT_RESET}",
                [
                    v
                    for c in part
                    for v in (c.job.id, c.attempt, now, RUNNING, c.job.pool, owner, lease_until)
                ],
            )

    @staticmethod
    def _queued_services(db: Tx, pool: str | None) -> list[str]:
        """The services with queued jobs (in `pool`)."""
        lane, args = SQLStore._lane(pool)
        rows = db.execute(
            f"WITH RECURSIVE {lane} SELECT service FROM lane WHERE service IS NOT NULL", args
        ).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _lane(pool: str | None) -> tuple[str, list[Any]]:
        """A recursive CTE `lane (service)` of the services with queued jobs (in `pool`),
        and a NULL after the last: found by hopping along the lane index from one service
        to the next, as fast with 10,000 queued jobs as with one; and its parameters."""
        where, args = "status = ?", [QUEUED]
        if pool is not None:
            where += " AND pool = ?"
            args.append(pool)
        sql = f"""lane (service) AS (
              SELECT MIN(service) FROM jobs WHERE {where}
              UNION ALL
              SELECT (SELECT MIN(service) FROM jobs WHERE {where} AND service > lane.service)
              FROM lane WHERE lane.service IS NOT NULL)"""
        return sql, [*args, *args]

    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        retry_at: float | None,
        pool: str | None = None,
    ) -> Job | None:
        now = time.time()
        with self._tx(durable=False) as db:
            # A node recorded while it ran (set_handle) stays when the outcome names none.
            db.execute(
                """UPDATE attempts SET finished_at = ?, status = ?, exit_code = ?, reason = ?,
                   log = ?, cause = ?, node = COALESCE(NULLIF(?, ''), node)
                   WHERE job_id = ? AND number = ? AND status = ?""",
                (
                    now,
                    outcome.status,
                    outcome.exit_code,
                    outcome.reason,
                    outcome.log,
                    None if outcome.cause is None else str(outcome.cause),
                    outcome.node,
                    job_id,
                    attempt,
                    RUNNING,  # an attempt taken back (interrupted) keeps how it ended
                ),
            )
            if retry_at is not None:
                db.execute(
                    """UPDATE jobs SET status = ?, run_after = ?, exit_code = ?, reason = ?,
                       pool = COALESCE(?, pool), node = COALESCE(NULLIF(?, ''), node)
                       WHERE id = ? AND status = ? AND attempts = ?""",
                    (
                        QUEUED,
                        retry_at,
                        outcome.exit_code,
                        outcome.reason,
                        pool,
                        outcome.node,
                        job_id,
                        RUNNING,
                        attempt,
                    ),
                )
            else:
                db.execute(
                    """UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, reason = ?,
                       node = COALESCE(NULLIF(?, ''), node)
                       WHERE id = ? AND status = ? AND attempts = ?""",
                    (
                        outcome.status,
                        now,
                        outcome.exit_code,
                        outcome.reason,
                        outcome.node,
                        job_id,
                        RUNNING,
                        attempt,
                    ),
                )
            # Read back in the same transaction: no second trip to the database (and, where
            # the store tells other control planes of ended jobs, told in it).
            told = self.ENDED_NOTICE if retry_at is None else ""
            row = db.execute(
                f"SELECT {JOB_COLUMNS}{told} FROM jobs j JOIN events e ON e.id = j.event_id "
                "WHERE j.id = ?",
                (job_id,),
            ).fetchone()
        return _job(row) if row is not None else None

    def set_handle(self, job_id: str, attempt: int, handle: str, node: str = "") -> bool:
        with self._tx(durable=False) as db:
            running = db.execute(
                """UPDATE jobs SET node = COALESCE(NULLIF(?, ''), node)
                   WHERE id = ? AND status = ? AND attempts = ?""",
                (node, job_id, RUNNING, attempt),
            ).rowcount
            if not running:
                return False
            db.execute(
                """UPDATE attempts SET handle = ?, node = COALESCE(NULLIF(?, ''), node)
                   WHERE job_id = ? AND number = ?""",
                (handle, node, job_id, attempt),
            )
            return True

    def running_attempts(self, pool: str | None = None) -> list[tuple[str, int, str]]:
        sql = """SELECT a.job_id, a.number, a.handle FROM jobs j
                 JOIN attempts a ON a.job_id = j.id AND a.number = j.attempts
                 WHERE j.status = ? AND a.status = ?"""
        args: list[Any] = [RUNNING, RUNNING]
        if pool is not None:
            sql += " AND a.pool = ?"
            args.append(pool)
        rows = self._read(sql + " ORDER BY j.started_at, j.seq", args)
        return [(r[0], r[1], r[2]) for r in rows]

    def payloads_in_use(self) -> set[str]:
        rows = self._read(
            """SELECT DISTINCT e.payload FROM events e JOIN jobs j ON j.event_id = e.id
               WHERE e.payload IS NOT NULL AND j.status != ?""",
            (SUCCEEDED,),
        )
        return {r[0] for r in rows}

    def retry_jobs(self, job_ids: Sequence[str]) -> list[str]:
        retried = []
        with self._tx() as db:
            for job_id in job_ids:
                changed = db.execute(
                    """UPDATE jobs SET status = ?, run_after = 0, finished_at = NULL,
                       reason = '' WHERE id = ? AND status IN (?, ?)""",
                    (QUEUED, job_id, FAILED, CANCELLED),
                ).rowcount
                if changed:
                    retried.append(job_id)
        return retried

    def cancel_queued(self, job_id: str, reason: str) -> bool:
        with self._tx() as db:
            return (
                db.execute(
                    """UPDATE jobs SET status = ?, finished_at = ?, reason = ?
                   WHERE id = ? AND status = ?""",
                    (CANCELLED, time.time(), reason, job_id, QUEUED),
                ).rowcount
                > 0
            )

    def requeue_running(
        self,
        reason: str,
        keep: Collection[str] = (),
        owner: str | None = None,
        now: float | None = None,
    ) -> list[str]:
        now = time.time() if now is None else now
        kept = set(keep)

        def lost(job_id: str, holder: str, until: float | None) -> bool:
            if job_id in kept:
                return False
            if owner is None or holder == owner or not holder:
                return True
            return until is None or until < now

        return self._requeue(reason, now, lost)

    def requeue_expired(self, reason: str, now: float) -> list[str]:
        return self._requeue(
            reason, now, lambda _, holder, until: bool(holder) and until is not None and until < now
        )

    def _requeue(
        self, reason: str, now: float, lost: Callable[[str, str, float | None], bool]
    ) -> list[str]:
        """Queue again the running jobs whose latest attempt is `lost(job id, its owner,
        its lease)`, and mark their attempts interrupted."""
        sql = """SELECT j.id, COALESCE(a.owner, ''), a.lease_until FROM jobs j
                 LEFT JOIN attempts a ON a.job_id = j.id AND a.number = j.attempts
                 WHERE j.status = ?"""
        with self._tx() as db:
            running = db.execute(sql, (RUNNING,)).fetchall()
            ids = [job_id for job_id, holder, until in running if lost(job_id, holder, until)]
            for chunk in _chunks(ids):
                db.execute(
                    f"""UPDATE jobs SET status = ?, run_after = 0, reason = ?
                        WHERE status = ? AND id IN ({_marks(chunk)})""",
                    (QUEUED, reason, RUNNING, *chunk),
                )
            # Every running attempt but the latest of each job still running (those kept).
            db.execute(
                """UPDATE attempts SET status = ?, reason = ?, finished_at = ?, cause = ?
                   WHERE status = ? AND NOT EXISTS (SELECT 1 FROM jobs j WHERE
                     j.id = attempts.job_id AND j.status = ? AND j.attempts = attempts.number)""",
                (INTERRUPTED, reason, now, str(Cause.STOPPED), RUNNING, RUNNING),
            )
            return ids

    def request_cancel(self, job_id: str, reason: str) -> bool:
        with self._tx() as db:
            return (
                db.execute(
                    """UPDATE attempts SET cancel = ? WHERE job_id = ? AND status = ?
                       AND number = (SELECT j.attempts FROM jobs j WHERE j.id = ? AND
                                     j.status = ?)""",
                    (reason, job_id, RUNNING, job_id, RUNNING),
                ).rowcount
                > 0
            )

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT job_id, cancel FROM attempts WHERE owner = ? AND status = ? AND cancel != ''",
            (owner, RUNNING),
        )
        return [(r[0], r[1]) for r in rows]

    def renew(self, owner: str, until: float) -> int:
        with self._tx(durable=False) as db:
            return int(
                db.execute(
                    "UPDATE attempts SET lease_until = ? WHERE owner = ? AND status = ?",
                    (until, owner, RUNNING),
                ).rowcount
            )

    # -- control planes sharing the store -------------------------------------------
    def lease(self, name: str, holder: str, until: float, now: float) -> bool:
        with self._tx(durable=False) as db:
            taken = db.execute(
                """INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                     until = excluded.until
                   WHERE leases.holder = excluded.holder OR leases.until < ?""",
                (name, holder, until, now),
            ).rowcount
            return bool(taken)

    def release(self, name: str, holder: str) -> None:
        with self._tx(durable=False) as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def heartbeat(self, replica: Replica) -> None:
        with self._tx(durable=False) as db:
            db.execute(
                """INSERT INTO replicas (id, address, since, seen) VALUES (?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                     since = excluded.since, seen = excluded.seen""",
                (replica.id, replica.address, replica.since, replica.seen),
            )

    def replicas(self, seen_since: float) -> list[Replica]:
        rows = self._read(
            "SELECT id, address, since, seen FROM replicas WHERE seen >= ? ORDER BY since, id",
            (seen_since,),
        )
        return [Replica(*row) for row in rows]

    def next_due(self, pool: str | None = None) -> float | None:
        if pool is None:
            rows = self._read("SELECT MIN(run_after) FROM jobs WHERE status = ?", (QUEUED,))
        else:
            rows = self._read(
                "SELECT MIN(run_after) FROM jobs WHERE status = ? AND pool = ?", (QUEUED, pool)
            )
        value = rows[0][0]
        return float(value) if value is not None else None

    def job(self, job_id: str) -> Job | None:
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM jobs j JOIN events e ON e.id = j.event_id WHERE j.id = ?",
            (job_id,),
        )
        return _job(rows[0]) if rows else None

    def jobs(
        self, service: str, offset: int = 0, limit: int | None = None, status: str | None = None
    ) -> list[Job]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs j JOIN events e ON e.id = j.event_id "
        sql += "WHERE j.service = ?"
        args: list[Any] = [service]
        if status:
            sql += " AND j.status = ?"
            args.append(status)
        sql += " ORDER BY j.seq DESC LIMIT ? OFFSET ?"
        args += [self.NO_LIMIT if limit is None else limit, offset]
        return [_job(r) for r in self._read(sql, args)]

    def count_jobs(self, service: str | None = None) -> dict[str, int]:
        if service is None:
            rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        else:
            rows = self._read(
                "SELECT status, COUNT(*) FROM jobs WHERE service = ? GROUP BY status", (service,)
            )
        return {r[0]: r[1] for r in rows}

    def usage(self, start: float, end: float) -> list[Usage]:
        found: dict[str, Usage] = {}
        for service, sync, other in self._read(
            "SELECT service, SUM(CASE WHEN priority >= ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN priority < ? THEN 1 ELSE 0 END) FROM jobs "
            "WHERE created_at >= ? AND created_at < ? GROUP BY service",
            (SYNC_PRIORITY, SYNC_PRIORITY, start, end),
        ):
            found[service] = Usage(service, int(sync), int(other))
        until = min(end, time.time())  # an attempt still running runs until now
        for service, seconds in self._read(
            "SELECT j.service, SUM("
            "(CASE WHEN COALESCE(a.finished_at, ?) > ? THEN ? ELSE COALESCE(a.finished_at, ?) END)"
            " - (CASE WHEN a.started_at < ? THEN ? ELSE a.started_at END)) "
            "FROM attempts a JOIN jobs j ON j.id = a.job_id "
            "WHERE a.started_at < ? AND COALESCE(a.finished_at, ?) > ? GROUP BY j.service",
            (until, until, until, until, start, start, until, until, start),
        ):
            kept = found.get(service, Usage(service))
            found[service] = dataclasses.replace(kept, seconds=max(0.0, float(seconds or 0)))
        return [found[name] for name in sorted(found)]

    def queued_by_pool(self) -> dict[str, int]:
        rows = self._read(
            "SELECT pool, COUNT(*) FROM jobs WHERE status = ? GROUP BY pool", (QUEUED,)
        )
        return {r[0]: r[1] for r in rows}

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self._read(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ? ORDER BY number", (job_id,)
        )
        return [
            Attempt(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                node=r[9],
                cause=Cause(r[10]) if r[10] else None,
                handle=r[11],
            )
            for r in rows
        ]

    def delete_jobs(self, service: str, statuses: Iterable[str]) -> int:
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        with self._tx() as db:
            db.execute(
                f"""DELETE FROM attempts WHERE job_id IN
                    (SELECT id FROM jobs WHERE service = ? AND status IN ({marks}))""",
                (service, *wanted),
            )
            return db.execute(
                f"DELETE FROM jobs WHERE service = ? AND status IN ({marks})", (service, *wanted)
            ).rowcount

    def delete_job(self, job_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM attempts WHERE job_id = ?", (job_id,))
            return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    # -- lineage ------------------------------------------------------------------------
    def origin(self, job_id: str) -> Event | None:
        rows = self._read(
            f"""SELECT {_ORIGIN_COLUMNS} FROM jobs j JOIN events e ON e.id = j.event_id
               JOIN events o ON o.id = COALESCE(e.origin, e.id) WHERE j.id = ?""",
            (job_id,),
        )
        return _event(rows[0]) if rows else None

    def family_busy(self, origin: int) -> bool:
        return bool(
            self._read(
                """SELECT 1 FROM events e JOIN jobs j ON j.event_id = e.id
                   WHERE e.origin = ? AND j.status IN (?, ?) LIMIT 1""",
                (origin, QUEUED, RUNNING),
            )
        )

    def family(self, origin: int) -> list[Job]:
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM events e JOIN jobs j ON j.event_id = e.id "
            "WHERE e.origin = ? ORDER BY j.seq",
            (origin,),
        )
        return [_job(r) for r in rows]

    def origins(self, job_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(job_ids):
            rows = self._read(
                "SELECT j.id, COALESCE(e.origin, e.id) FROM jobs j JOIN events e "
                f"ON e.id = j.event_id WHERE j.id IN ({_marks(chunk)})",
                chunk,
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    def family_counts(self, origins: Sequence[int]) -> list[tuple[int, str, str, int]]:
        rows: list[tuple[int, str, str, int, int]] = []
        for chunk in _chunks(origins):
            rows += [
                (r[0], r[1], r[2], r[3], r[4])
                for r in self._read(
                    "SELECT e.origin, j.service, j.status, COUNT(*), MIN(j.seq) FROM events e "
                    f"JOIN jobs j ON j.event_id = e.id WHERE e.origin IN ({_marks(chunk)}) "
                    "GROUP BY e.origin, j.service, j.status",
                    chunk,
                )
            ]
        rows.sort(key=lambda r: r[4])
        return [r[:4] for r in rows]

    def settled_origins(self, service: str, since: float) -> list[Event]:
        rows = self._read(
            f"""SELECT {_ORIGIN_COLUMNS} FROM events o WHERE o.id IN (
                 SELECT e.origin FROM jobs j JOIN events e ON e.id = j.event_id
                 WHERE j.service = ? AND j.status NOT IN (?, ?, ?))
               AND NOT EXISTS (SELECT 1 FROM events e JOIN jobs j ON j.event_id = e.id
                               WHERE e.origin = o.id AND j.status IN (?, ?))
               AND (SELECT MIN(j.created_at) FROM events e JOIN jobs j ON j.event_id = e.id
                    WHERE e.origin = o.id) >= ?
               ORDER BY o.id""",
            (service, QUEUED, RUNNING, REFUSED, QUEUED, RUNNING, since),
        )
        return [_event(r) for r in rows]

    def outputs(self, job_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = []
        for chunk in _chunks(job_ids):
            found += [
                (r[0], r[1], r[2])
                for r in self._read(
                    f"SELECT job_id, source, key FROM outputs WHERE job_id IN ({_marks(chunk)}) "
                    "ORDER BY key",
                    chunk,
                )
            ]
        return found

    def record_output(self, source: str, key: str, job_id: str, attempt: int | None = None) -> None:
        with self._tx(durable=False) as db:
            if (
                attempt is not None
                and not db.execute(
                    "SELECT 1 FROM jobs WHERE id = ? AND status = ? AND attempts = ?",
                    (job_id, RUNNING, attempt),
                ).fetchall()
            ):
                raise FencedError(
                    f"job {job_id}: attempt {attempt} is no longer its running one (it ended, "
                    f"or the job runs again elsewhere); its output {key} is not written"
                )
            db.execute(
                """INSERT INTO outputs (source, key, job_id) VALUES (?, ?, ?)
                   ON CONFLICT (source, key) DO UPDATE SET job_id = excluded.job_id""",
                (source, key, job_id),
            )

    def producer(self, source: str, key: str) -> Job | None:
        rows = self._read("SELECT job_id FROM outputs WHERE source = ? AND key = ?", (source, key))
        return self.job(rows[0][0]) if rows else None

    def producers(self, source: str, keys: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for chunk in _chunks(sorted(set(keys))):
            rows = self._read(
                f"SELECT o.key, {JOB_COLUMNS} FROM outputs o JOIN jobs j ON j.id = o.job_id "
                f"JOIN events e ON e.id = j.event_id WHERE o.source = ? AND o.key IN "
                f"({_marks(chunk)})",
                (source, *chunk),
            )
            found.update((row[0], _job(row[1:])) for row in rows)
        return found

    # -- meta ---------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO meta (key, value) VALUES (?, ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (key, value),
            )

    def first_meta(self, key: str, value: str) -> str:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])
