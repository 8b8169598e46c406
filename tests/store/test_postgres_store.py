"""The PostgreSQL store alone: what it says when the database cannot be reached (the
password never shown), its schema made once when control planes start at once, a
schema from a newer ondrop refused, and the lock one control plane holds on the store
(the rest of what a store must do is the contract suite's, tests/contract)."""

from __future__ import annotations

import threading

import pytest

from ondrop.errors import StoreError
from tests.support.servers import Postgres

psycopg = pytest.importorskip("psycopg")  # make setup installs it; CI has it

from ondrop.store.postgres import SCHEMA_VERSION, PostgresStore  # noqa: E402
from ondrop.store.url import shown  # noqa: E402
from tests.support.stored import saved  # noqa: E402


def test_a_password_is_never_shown() -> None:
    assert shown("postgresql://me:s3cret@db.example:5433/jobs") == (
        "postgresql://me@db.example:5433/jobs"
    )
    assert shown("postgresql://me@db/jobs") == "postgresql://me@db/jobs"


def test_a_database_that_cannot_be_reached_is_named_without_its_password() -> None:
    from tests.support.servers import free_port

    url = f"postgresql://me:s3cret@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert "cannot be reached" in message and "check that PostgreSQL is up" in message
    assert url.replace("me:s3cret@", "me@") in message
    assert "s3cret" not in message
    assert caught.value.status_code == 503


def test_control_planes_starting_at_once_make_the_schema_once(postgres: Postgres) -> None:
    url = postgres.database()
    stores: list[PostgresStore] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(stores) == 4
    assert stores[0].get_meta("schema") == str(SCHEMA_VERSION)
    for store in stores:
        store.close()


def test_a_schema_from_a_newer_ondrop_is_refused_and_left_alone(postgres: Postgres) -> None:
    url = postgres.database()
    store = PostgresStore(url)
    store.set_meta("schema", str(SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(StoreError, match=r"made by a newer ondrop.*upgrade ondrop"):
        PostgresStore(url)
    with psycopg.connect(url) as conn:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    assert value == str(SCHEMA_VERSION + 1)


def test_one_control_plane_holds_the_store_until_it_closes(postgres: Postgres) -> None:
    url = postgres.database()
    first, second = PostgresStore(url), PostgresStore(url)
    assert first.hold_sole() and first.hold_sole()  # taken, and held again by its holder
    assert not second.hold_sole()
    first.close()  # as a killed process's connection ends
    assert second.hold_sole()
    second.close()


def test_a_control_plane_listening_hears_of_each_run_job_that_ends_for_good(
    postgres: Postgres,
) -> None:
    import time

    from ondrop.events.base import object_event
    from ondrop.jobs import SYNC_PRIORITY
    from ondrop.store.base import FAILED, SUCCEEDED, NewJob, Outcome
    from tests.support.waiting import wait_for

    url = postgres.database()
    listening, finishing = PostgresStore(url), PostgresStore(url)
    heard: list[str] = []
    try:
        assert listening.listen(heard.append)
        saved(finishing, "svc")
        # /run jobs (someone waits for them), and one nobody waits for.
        for key, priority in (("a", SYNC_PRIORITY), ("b", SYNC_PRIORITY), ("c", 0)):
            event = object_event("local.default", key, "1", 1)
            finishing.add_event(event, [NewJob(key, "svc", priority=priority)])
        claims = {c.job.id: c for c in finishing.claim(3, {}, time.time())}
        # Until the listener is in, an end may be missed (the waiters poll as well).
        wait_for(lambda: _listening(url))
        finishing.finish("c", claims["c"].attempt, Outcome(SUCCEEDED, 0), None)
        finishing.finish("a", 1, Outcome(FAILED, 1, "exit status 1"), time.time() + 60)
        finishing.finish("b", claims["b"].attempt, Outcome(SUCCEEDED, 0), None)
        # "a" is queued again (not ended for good); nobody waits for "c".
        assert wait_for(lambda: heard) == ["b"]
    finally:
        listening.close()
        finishing.close()


def _listening(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
            "AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])
