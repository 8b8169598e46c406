"""The embedded store: one SQLite file in WAL mode, one connection behind a lock.

Every write is one transaction, committed with synchronous=FULL, so what a
method returned survives a crash of the process or of the machine. A store in
memory (`SQLiteStore.in_memory`) keeps nothing past its process: for tests and
throwaway runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ondrop.errors import DiskFullError, StoreBusyError, StoreError, disk_full
from ondrop.store.sql import LATER_INDEXES, Row, SQLStore, tables

# (DROP INDEX: a claim reads a few rows of each service's queue, never the whole queue.)
SCHEMA = "DROP INDEX IF EXISTS jobs_queue;\n" + tables(
    time="REAL", integer="INTEGER", serial="INTEGER PRIMARY KEY", name="TEXT"
)
# Columns added since the first schema: a store made before one gains it on open.
ADDED_COLUMNS = (
    ("events", "origin", "INTEGER"),  # lineage
    ("jobs", "node", "TEXT NOT NULL DEFAULT ''"),  # jobs on other machines
    ("attempts", "node", "TEXT NOT NULL DEFAULT ''"),
    ("attempts", "cause", "TEXT"),
    ("attempts", "handle", "TEXT NOT NULL DEFAULT ''"),
    ("attempts", "owner", "TEXT NOT NULL DEFAULT ''"),  # control planes sharing a store
    ("attempts", "lease_until", "REAL"),
    ("attempts", "cancel", "TEXT NOT NULL DEFAULT ''"),  # asked of another control plane
)


# A database in memory lives while one of its connections is open; the stores on one share
# a lock, since SQLite's shared cache answers a second connection's write with an error
# (SQLITE_LOCKED) rather than waiting for the first.
_MEMORY = "file:ondrop-{name}?mode=memory&cache=shared"
_memory_locks: dict[str, threading.RLock] = {}
_memory_locks_lock = threading.Lock()


class SQLiteStore(SQLStore):
    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = str(path)
        self._memory = self.path == ":memory:" or self.path.startswith("file:")
        if not self._memory and not os.path.exists(self.path):
            # Tokens and secrets live here; SQLite gives its -wal and -shm files the same mode.
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        if self.path.startswith("file:"):
            with _memory_locks_lock:
                self._lock = _memory_locks.setdefault(self.path, self._lock)
        try:
            with self._lock:
                self._db = self._open_schema()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        self._durable = True
        # Read connections, reused: threads come and go with jobs.
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()

    def _open_schema(self) -> sqlite3.Connection:
        """The writing connection, on a database with this version's schema."""
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, uri=self._memory
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        for table, column, definition in ADDED_COLUMNS:
            columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:  # a store from before it
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        db.executescript(LATER_INDEXES)
        return db

    @classmethod
    def in_memory(cls, name: str) -> SQLiteStore:
        """A store in this process's memory, the same database for every store of this
        `name` while one of them is open (another control plane on it, or the same one
        reopened)."""
        return cls(_MEMORY.format(name=name))

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if durable != self._durable:
                    self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                # A COMMIT that fails may leave the transaction open (SQLite says so for a
                # busy or full disk): end it, so that what failed is undone and the next
                # transaction can begin.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError | DiskFullError:
        """What a failed statement means to the caller: a database another program holds
        locked, a full disk, or another failure; in each case nothing was recorded."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreBusyError(
                f"the store {self.path} is locked by another program ({exc}); nothing was "
                "recorded: try again in a moment"
            )
        if primary == sqlite3.SQLITE_FULL or disk_full(exc):
            return DiskFullError(
                f"no space left for the store {self.path} ({exc}); nothing was recorded: free "
                "space in its folder",
                folder=Path(self.path).parent,
            )
        return StoreError(f"store {self.path}: {exc}")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """A read on this thread's own connection: in WAL mode readers wait for no writer
        (and no writer's fsync), and see every transaction committed before they start."""
        if self._memory:  # readers would wait on the writer's table locks, not its snapshot
            with self._lock:
                try:
                    return self._db.execute(sql, args).fetchall()
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc
        try:
            reader = self._readers.get_nowait()
        except queue.Empty:
            try:
                reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc
        try:
            return reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._readers.put(reader)

    def close(self) -> None:
        with self._lock:
            while True:
                try:
                    self._readers.get_nowait().close()
                except queue.Empty:
                    break
            self._db.close()
