"""The SQLite store alone: a store made by an older schema is upgraded in place on open,
and a store in memory lives while one store of its name is open (the rest of what a store
must do is the contract suite's, tests/contract)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from ondrop.jobs import Cause
from ondrop.store.base import FAILED, Outcome
from ondrop.store.sqlite import SQLiteStore

# The tables as they were before jobs named their node, their attempts' cause and handle.
OLD_SCHEMA = """
CREATE TABLE services (name TEXT PRIMARY KEY, definition TEXT NOT NULL, token TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, source TEXT NOT NULL, key TEXT NOT NULL,
    version TEXT NOT NULL, kind TEXT NOT NULL, time REAL NOT NULL, size INTEGER,
    body TEXT NOT NULL, payload TEXT, parent_job TEXT, origin INTEGER,
    UNIQUE (source, key, version));
CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, service TEXT NOT NULL,
    event_id INTEGER NOT NULL REFERENCES events (id), status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, pool TEXT NOT NULL DEFAULT 'faas',
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, run_after REAL NOT NULL DEFAULT 0, exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '', UNIQUE (service, event_id));
CREATE TABLE attempts (job_id TEXT NOT NULL, number INTEGER NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL, exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '', log TEXT NOT NULL DEFAULT '',
    pool TEXT NOT NULL DEFAULT '', PRIMARY KEY (job_id, number));
CREATE TABLE outputs (source TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT NOT NULL,
    PRIMARY KEY (source, key));
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO events VALUES (1, 'local.default', 'in/a', '1', 'object', 1.0, 1, '{}', NULL,
    NULL, 1);
INSERT INTO jobs (id, service, event_id, status, attempts, created_at, started_at)
    VALUES ('done', 'svc', 1, 'failed', 1, 1.0, 1.0);
INSERT INTO attempts VALUES ('done', 1, 1.0, 2.0, 'failed', 1, 'exit status 1', 'boom', 'faas');
INSERT INTO events VALUES (2, 'local.default', 'in/b', '1', 'object', 1.0, 1, '{}', NULL,
    NULL, 2);
INSERT INTO jobs (id, service, event_id, status, attempts, created_at, started_at)
    VALUES ('busy', 'svc', 2, 'running', 1, 1.0, 1.0);
INSERT INTO attempts (job_id, number, started_at, status, pool)
    VALUES ('busy', 1, 1.0, 'running', 'faas');
"""


def test_a_store_made_before_nodes_is_upgraded_in_place_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.executescript(OLD_SCHEMA)
    store = SQLiteStore(path)
    (attempt,) = store.attempts("done")
    assert (attempt.status, attempt.log, attempt.node, attempt.cause, attempt.handle) == (
        FAILED,
        "boom",
        "",
        None,
        "",
    )
    done = store.job("done")
    assert done is not None and (done.status, done.node) == (FAILED, "")
    assert store.running_attempts() == [("busy", 1, "")]
    assert store.set_handle("busy", 1, "ray:busy", "node-a")
    store.finish("busy", 1, Outcome(FAILED, None, "lost", cause=Cause.LOST), None)
    store.close()
    reopened = SQLiteStore(path)  # opening an upgraded store again changes nothing
    (busy,) = reopened.attempts("busy")
    assert (busy.node, busy.cause, busy.handle) == ("node-a", Cause.LOST, "ray:busy")
    job = reopened.job("busy")
    assert job is not None and job.node == "node-a"


def test_a_store_in_memory_is_one_database_per_name_while_one_of_them_is_open() -> None:
    first = SQLiteStore.in_memory("one")
    first.set_meta("k", "v")
    second = SQLiteStore.in_memory("one")
    assert second.get_meta("k") == "v"
    other = SQLiteStore.in_memory("two")
    assert other.get_meta("k") is None
    first.close()
    assert second.get_meta("k") == "v"  # the other store kept it
    second.close()
    again = SQLiteStore.in_memory("one")
    assert again.get_meta("k") is None  # the last one closed, it was gone
    again.close()
    other.close()
