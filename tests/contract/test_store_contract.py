"""The Store contract: every store (the SQLite file, SQLite in memory, PostgreSQL) records
events once, claims jobs fairly and within limits, ends, retries and interrupts attempts
with their node, cause and handle, keeps all of it across reopening, and gives each job to
one claimer when two control planes share one database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ondrop.events.base import object_event
from ondrop.jobs import Cause
from ondrop.store.base import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    QUEUED,
    REFUSED,
    RUNNING,
    SUCCEEDED,
    Claim,
    NewJob,
    Outcome,
    Quota,
    Store,
)
from ondrop.store.sqlite import SQLiteStore
from tests.support.stored import saved

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on one database, fresh for the test (each call another connection
    to it: a restarted control plane, or a second one)."""
    if request.param == "sqlite":
        path = tmp_path / "s.db"

        def make() -> Store:
            return SQLiteStore(path)
    elif request.param == "memory":
        name = f"{request.node.name}-{id(request)}"
        # The database lives while one store on it is open: this one, for the test, so
        # that a store closed (a control plane that died) can be opened again.
        keeper = SQLiteStore.in_memory(name)
        request.addfinalizer(keeper.close)

        def make() -> Store:
            return SQLiteStore.in_memory(name)
    else:
        from ondrop.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres").database()

        def make() -> Store:
            return PostgresStore(url)

    opened: list[Store] = []

    def opener() -> Store:
        opened.append(make())
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()


def add(store: Store, key: str, *services: str, version: str = "1") -> list[str]:
    saved(store, *services)
    event = object_event("local.default", key, version, 1)
    jobs = store.add_event(event, [NewJob(f"{s}-{key}-{version}", s) for s in services])
    return [j.id for j in jobs]


def test_the_same_object_version_twice_makes_jobs_once(store: Store) -> None:
    assert add(store, "in/a", "svc") == ["svc-in/a-1"]
    assert add(store, "in/a", "svc") == []
    assert add(store, "in/a", "svc", version="2") == ["svc-in/a-2"]
    assert store.seen("local.default", "in/a", "1")
    assert not store.seen("local.default", "in/a", "3")
    asked = [("in/a", "1"), ("in/a", "3"), ("in/b", "1")]
    assert store.unseen("local.default", asked) == {("in/a", "3"), ("in/b", "1")}
    assert store.unseen("other.default", asked) == set(asked)
    many = [(f"in/f{i}", "1") for i in range(1200)]  # more than one statement can take
    assert store.unseen("local.default", [*many, ("in/a", "1")]) == set(many)


def test_one_event_can_start_several_services(store: Store) -> None:
    assert add(store, "in/a", "one", "two") == ["one-in/a-1", "two-in/a-1"]
    assert store.count_jobs() == {QUEUED: 2}


def test_claim_marks_jobs_running_with_a_new_attempt(store: Store) -> None:
    add(store, "in/a", "svc")
    (claim,) = store.claim(5, {}, time.time())
    assert claim.attempt == 1 and claim.job.status == RUNNING
    assert claim.event.key == "in/a"
    assert store.claim(5, {}, time.time()) == []


def test_claim_respects_per_service_caps_and_lets_services_take_turns(
    store: Store,
) -> None:
    for i in range(10):
        add(store, f"big/{i}", "big")
    add(store, "small/0", "small")
    claims = store.claim(2, {}, time.time())
    assert sorted(c.job.service for c in claims) == ["big", "small"]
    # The cap counts what runs already: one big job runs, so one more may start.
    claims = store.claim(5, {"big": 2}, time.time())
    assert [c.job.service for c in claims] == ["big"]
    assert store.claim(5, {"big": 2}, time.time()) == []


def test_the_service_with_the_fewest_jobs_running_goes_first(store: Store) -> None:
    for i in range(5):
        add(store, f"busy/{i}", "busy")
    assert len(store.claim(3, {}, time.time())) == 3  # busy runs 3
    add(store, "idle/0", "idle")  # newer than every queued busy job, yet first
    (claim,) = store.claim(1, {}, time.time())
    assert claim.job.service == "idle"


def claimed_together(stores: list[Store], claim: Callable[[Store], list[Claim]]) -> list[str]:
    """The jobs claimed when each store, in a thread of its own, claims ten times at once."""
    taken: list[str] = []

    def claimer(store: Store) -> None:
        for _ in range(10):
            taken.extend(c.job.id for c in claim(store))

    threads = [threading.Thread(target=claimer, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return taken


def test_a_cap_holds_across_control_planes(open_store: Opener) -> None:
    from ondrop.store.base import StoredService

    first, second = open_store(), open_store()
    first.save_services([StoredService("capped", {"name": "capped"}, "t", 1.0, 1.0)])
    for i in range(40):
        add(first, f"in/{i}", "capped")
    taken = claimed_together([first, second], lambda s: s.claim(3, {"capped": 4}, time.time()))
    assert len(taken) == 4 and second.count_jobs() == {RUNNING: 4, QUEUED: 36}


def test_a_quota_holds_the_jobs_of_its_owners_services_together(store: Store) -> None:
    for i in range(6):
        add(store, f"a/{i}", "one")
        add(store, f"b/{i}", "two")
    add(store, "c/0", "free")
    # 1.5 cores between the owner's services: one's jobs count 1, two's 0.5.
    quota = Quota("ann", {"one": (1.0, 0, 0), "two": (0.5, 0, 0)}, cpu=1.5)
    claims = store.claim(10, {}, time.time(), quotas=[quota])
    taken = sorted(c.job.service for c in claims)
    assert taken.count("free") == 1  # not the owner's: not held back
    assert sum({"one": 1.0, "two": 0.5}.get(s, 0) for s in taken) <= 1.5
    assert store.claim(10, {}, time.time(), quotas=[quota]) == []  # counted in the store
    # Jobs at once, and memory, are held too.
    owned = [t for t in taken if t != "free"]
    jobs = Quota("ann", {"one": (0.0, 0, 0), "two": (0.0, 0, 0)}, jobs=len(owned))
    assert store.claim(10, {}, time.time(), quotas=[jobs]) == []
    more = store.claim(1, {}, time.time(), quotas=[replace(jobs, jobs=len(owned) + 1)])
    owned += [c.job.service for c in more]
    assert len(more) == 1
    # Memory: room for one more job that needs 1, none that needs 2.
    needs = {"one": (0.0, 2, 0), "two": (0.0, 1, 0)}
    held = sum(needs[s][1] for s in owned)
    (last,) = store.claim(10, {}, time.time(), quotas=[Quota("ann", needs, memory=held + 1)])
    assert last.job.service == "two"


def test_a_quota_holds_across_control_planes(open_store: Opener) -> None:
    from ondrop.store.base import StoredService

    first, second = open_store(), open_store()
    first.save_services([StoredService("q", {"name": "q"}, "t", 1.0, 1.0)])
    for i in range(30):
        add(first, f"in/{i}", "q")
    quota = Quota("ann", {"q": (1.0, 0, 0)}, jobs=3)
    taken = claimed_together([first, second], lambda s: s.claim(2, {}, time.time(), quotas=[quota]))
    assert len(taken) == 3 and second.count_jobs() == {RUNNING: 3, QUEUED: 27}


def test_higher_priority_jobs_are_claimed_first(store: Store) -> None:
    add(store, "a", "svc")
    store.add_event(object_event("http", "b", "x", 1), [NewJob("urgent", "svc", priority=10)])
    (claim,) = store.claim(1, {}, time.time())
    assert claim.job.id == "urgent"


def test_finish_records_the_outcome_and_a_retry_waits_for_its_time(store: Store) -> None:
    add(store, "a", "svc")
    (claim,) = store.claim(1, {}, time.time())
    later = time.time() + 60
    job = store.finish(claim.job.id, 1, Outcome(FAILED, 2, "exit status 2", "boom"), later)
    assert job is not None and job.status == QUEUED and job.reason == "exit status 2"
    assert store.claim(1, {}, time.time()) == []
    assert store.next_due() == pytest.approx(later)
    (again,) = store.claim(1, {}, later + 1)
    assert again.attempt == 2
    done = store.finish(again.job.id, 2, Outcome(SUCCEEDED, 0, "", "ok"), None)
    assert done is not None and done.status == SUCCEEDED and done.attempts == 2
    attempts = store.attempts(claim.job.id)
    assert [(a.number, a.status, a.log) for a in attempts] == [
        (1, FAILED, "boom"),
        (2, SUCCEEDED, "ok"),
    ]


def test_running_jobs_are_queued_again_after_a_crash(open_store: Opener) -> None:
    store = open_store()
    add(store, "a", "svc")
    (claim,) = store.claim(1, {}, time.time())
    store.close()  # the platform dies here
    reopened = open_store()
    assert reopened.requeue_running("platform stopped") == [claim.job.id]
    job = reopened.job(claim.job.id)
    assert job is not None and job.status == QUEUED
    assert reopened.attempts(claim.job.id)[0].status == "interrupted"
    (again,) = reopened.claim(1, {}, time.time())
    assert again.attempt == 2


def test_finishing_a_deleted_job_is_harmless(store: Store) -> None:
    add(store, "a", "svc")
    (claim,) = store.claim(1, {}, time.time())
    store.delete_job(claim.job.id)
    assert store.finish(claim.job.id, 1, Outcome(SUCCEEDED), None) is None


def test_ensure_job_returns_the_job_recorded_before(store: Store) -> None:
    saved(store, "svc", "other")
    event = object_event("local.default", "a", "1", 1)
    first, created = store.ensure_job(event, NewJob("j1", "svc"))
    again, created_again = store.ensure_job(event, NewJob("j2", "svc"))
    assert (created, created_again, again.id) == (True, False, first.id)
    other, created_other = store.ensure_job(event, NewJob("j3", "other"))
    assert created_other and other.id == "j3"


def test_jobs_are_listed_newest_first_with_paging_and_deleted_by_status(
    store: Store,
) -> None:
    for i in range(5):
        add(store, f"k{i}", "svc")
    ids = [j.id for j in store.jobs("svc")]
    assert ids == [f"svc-k{i}-1" for i in reversed(range(5))]
    assert [j.id for j in store.jobs("svc", offset=1, limit=2)] == ids[1:3]
    (claim,) = store.claim(1, {}, time.time())
    store.finish(claim.job.id, 1, Outcome(SUCCEEDED), None)
    assert store.delete_jobs("svc", [SUCCEEDED]) == 1
    assert store.count_jobs("svc") == {QUEUED: 4}


def test_services_are_saved_together_and_removed_with_their_jobs(store: Store) -> None:
    from ondrop.store.base import StoredService

    store.save_services(
        [
            StoredService("a", {"name": "a"}, "t1", 1.0, 1.0),
            StoredService("b", {"name": "b"}, "t2", 1.0, 1.0),
        ]
    )
    add(store, "x", "a")
    assert [s.name for s in store.services()] == ["a", "b"]
    assert store.delete_service("a")
    assert not store.delete_service("a")
    assert store.count_jobs("a") == {}


def test_outputs_remember_their_producer(store: Store) -> None:
    (job_id,) = add(store, "in/a", "svc")
    store.record_output("local.default", "out/a", job_id)
    producer = store.producer("local.default", "out/a")
    assert producer is not None and producer.service == "svc"
    assert store.producer("local.default", "out/b") is None
    found = store.producers("local.default", ["out/a", "out/b", "in/a"])
    assert list(found) == ["out/a"] and found["out/a"].id == job_id
    assert store.producers("other.default", ["out/a"]) == {}


def test_a_family_is_counted_by_stage_from_any_of_its_jobs(store: Store) -> None:
    (first,) = add(store, "in/a", "split")
    assert [c.job.id for c in store.claim(1, {}, time.time())] == [first]
    store.finish(first, 1, Outcome(SUCCEEDED), None)
    (other,) = add(store, "in/b", "split")
    saved(store, "split", "detect")
    for n in (1, 2):  # outputs of the first job start two more
        event = object_event("local.default", f"parts/a{n}", "1", 1, parent_job=first)
        store.add_event(event, [NewJob(f"detect-a{n}", "detect")])
    origins = store.origins([first, "detect-a2", other, "nobody"])
    assert set(origins) == {first, "detect-a2", other}  # unknown jobs left out
    assert origins[first] == origins["detect-a2"] != origins[other]
    counts = store.family_counts([origins[first]])
    assert counts == [
        (origins[first], "split", SUCCEEDED, 1),
        (origins[first], "detect", QUEUED, 2),
    ]
    both = store.family_counts([origins[first], origins[other]])
    assert sorted((o, s, st, n) for o, s, st, n in both if o == origins[other]) == [
        (origins[other], "split", QUEUED, 1)
    ]
    assert store.family_counts([]) == [] and store.origins([]) == {}


def test_invocation_bodies_are_in_use_until_their_job_succeeded(store: Store) -> None:
    from ondrop.events.base import invoke_event

    saved(store, "svc")
    for name, status in [("ok", SUCCEEDED), ("bad", FAILED), ("waiting", None)]:
        store.add_event(invoke_event(f"body-{name}", 4, name), [NewJob(name, "svc")])
        if status is not None:
            (claim,) = store.claim(1, {}, time.time())
            store.finish(claim.job.id, 1, Outcome(status), None)
    assert store.payloads_in_use() == {"body-bad", "body-waiting"}


def test_a_refused_job_is_listed_with_its_reason_and_never_claimed(store: Store) -> None:
    saved(store, "svc")
    event = object_event("local.default", "in/link", "link-ab12", 3)
    (job,) = store.add_event(event, [NewJob("svc-link", "svc", status=REFUSED, reason="a link")])
    assert (job.status, job.reason, job.attempts) == (REFUSED, "a link", 0)
    assert job.finished_at is not None
    assert store.job("svc-link") == job
    assert store.count_jobs("svc") == {REFUSED: 1}
    assert store.claim(5, {}, time.time()) == []
    assert store.next_due() is None
    assert store.retry_jobs(["svc-link"]) == []
    assert store.settled_origins("svc", 0) == []  # a collector has nothing to collect
    assert store.delete_jobs("svc", FINISHED) == 1


# -- jobs on other machines: the node, the typed cause, the backend's handle ---------------
def test_finish_records_the_node_and_cause_of_each_attempt_and_they_survive_reopening(
    open_store: Opener,
) -> None:
    store = open_store()
    (job_id,) = add(store, "a", "svc")
    store.claim(1, {}, time.time())
    oom = Outcome(FAILED, 137, "out of memory", "killed", Cause.OOM, node="node-a")
    queued = store.finish(job_id, 1, oom, time.time())
    assert queued is not None and queued.node == "node-a"
    (again,) = store.claim(1, {}, time.time())
    assert again.job.node == "" and again.attempt == 2  # its new attempt's node is not known
    done = store.finish(job_id, 2, Outcome(SUCCEEDED, 0, node="node-b"), None)
    assert done is not None and done.node == "node-b"
    store.close()
    reopened = open_store()
    assert [(a.node, a.cause, a.status) for a in reopened.attempts(job_id)] == [
        ("node-a", Cause.OOM, FAILED),
        ("node-b", None, SUCCEEDED),
    ]
    job = reopened.job(job_id)
    assert job is not None and job.node == "node-b"
    assert [j.node for j in reopened.jobs("svc")] == ["node-b"]


def test_set_handle_is_fenced_by_the_attempt_number(store: Store) -> None:
    (job_id,) = add(store, "a", "svc")
    store.claim(1, {}, time.time())
    assert store.set_handle(job_id, 1, "ray:task-1", "node-a")
    assert store.running_attempts() == [(job_id, 1, "ray:task-1")]
    job = store.job(job_id)
    assert job is not None and job.node == "node-a"
    assert not store.set_handle(job_id, 2, "ray:task-2")  # not its attempt (yet)
    assert not store.set_handle("no-such-job", 1, "ray:task-3")
    # An outcome that names no node keeps the one recorded while it ran.
    store.finish(job_id, 1, Outcome(FAILED, 1, "exit status 1", cause=Cause.EXIT), time.time())
    assert not store.set_handle(job_id, 1, "ray:late", "node-z")  # it has ended
    (first,) = store.attempts(job_id)
    assert (first.handle, first.node, first.cause) == ("ray:task-1", "node-a", Cause.EXIT)
    assert store.running_attempts() == []
    store.claim(1, {}, time.time())
    assert store.running_attempts() == [(job_id, 2, "")]  # submitted, not yet placed
    assert store.set_handle(job_id, 2, "ray:task-2")
    assert store.running_attempts() == [(job_id, 2, "ray:task-2")]
    job = store.job(job_id)
    assert job is not None and job.node == ""  # no node named for attempt 2


def test_running_attempts_lists_those_of_one_pool_or_all(store: Store) -> None:
    saved(store, "quick", "long")
    event = object_event("local.default", "a", "1", 1)
    store.add_event(event, [NewJob("fast", "quick"), NewJob("slow", "long", pool="batch")])
    add(store, "b", "queued")  # never claimed: not running
    store.claim(1, {}, time.time(), pool="faas")
    store.claim(1, {}, time.time(), pool="batch")
    store.set_handle("slow", 1, "ray:slow")
    assert sorted(store.running_attempts()) == [("fast", 1, ""), ("slow", 1, "ray:slow")]
    assert store.running_attempts("batch") == [("slow", 1, "ray:slow")]
    assert store.running_attempts("faas") == [("fast", 1, "")]
    store.finish("fast", 1, Outcome(SUCCEEDED), None)
    assert store.running_attempts() == [("slow", 1, "ray:slow")]


def test_requeue_running_leaves_the_jobs_a_backend_re_attached_to(open_store: Opener) -> None:
    store = open_store()
    for key in ("kept", "lost"):
        add(store, key, "svc")
    claims = {c.job.input_key: c for c in store.claim(5, {}, time.time())}
    kept, lost = claims["kept"].job.id, claims["lost"].job.id
    store.set_handle(kept, 1, "ray:kept", "node-a")
    store.set_handle(lost, 1, "ray:lost", "node-b")
    store.close()  # the control plane restarts; its backend finds `kept` still running
    reopened = open_store()
    assert reopened.requeue_running("the platform stopped", keep=[kept, "unknown"]) == [lost]
    assert reopened.running_attempts() == [(kept, 1, "ray:kept")]
    still = reopened.job(kept)
    assert still is not None and (still.status, still.node) == (RUNNING, "node-a")
    queued = reopened.job(lost)
    assert queued is not None and queued.status == QUEUED
    (interrupted,) = reopened.attempts(lost)
    assert (interrupted.status, interrupted.cause) == (INTERRUPTED, Cause.STOPPED)
    assert reopened.finish(kept, 1, Outcome(SUCCEEDED), None) is not None
    done = reopened.job(kept)
    assert done is not None and (done.status, done.node) == (SUCCEEDED, "node-a")
    assert reopened.requeue_running("again") == []


# -- two control planes on one database -------------------------------------------------
def test_two_control_planes_never_claim_the_same_job(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    ids = set()
    for i in range(120):
        ids.update(add(first if i % 2 else second, f"in/{i}", "one", "two"))
    taken: dict[str, list[str]] = {"first": [], "second": []}

    def claimer(name: str, store: Store) -> None:
        while claims := store.claim(7, {}, time.time()):
            taken[name] += [c.job.id for c in claims]

    threads = [
        threading.Thread(target=claimer, args=(name, store))
        for name, store in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    both = taken["first"] + taken["second"]
    assert len(both) == len(set(both)) == len(ids)  # each job once, none left out
    assert set(both) == ids
    assert first.count_jobs() == {RUNNING: len(ids)}


def test_a_late_end_from_an_attempt_taken_over_changes_nothing(open_store: Opener) -> None:
    dead, alive = open_store(), open_store()
    (job_id,) = add(dead, "in/a", "svc")
    dead.claim(1, {}, time.time())  # attempt 1, on the control plane that then dies
    assert alive.requeue_running("its control plane died") == [job_id]
    (claim,) = alive.claim(1, {}, time.time())
    assert claim.attempt == 2
    from ondrop.errors import FencedError

    with pytest.raises(FencedError, match="attempt 1 is no longer its running one"):
        dead.record_output("local.default", "out/a", job_id, attempt=1)  # before it writes
    assert alive.producer("local.default", "out/a") is None
    alive.record_output("local.default", "out/a", job_id, attempt=2)
    producer = dead.producer("local.default", "out/a")
    assert producer is not None and producer.id == job_id
    late = dead.finish(job_id, 1, Outcome(SUCCEEDED, 0), None)
    assert late is not None and (late.status, late.attempts) == (RUNNING, 2)
    first_attempt = alive.attempts(job_id)[0]
    assert (first_attempt.status, first_attempt.cause) == (INTERRUPTED, Cause.STOPPED)
    assert not dead.set_handle(job_id, 1, "ray:late")
    done = alive.finish(job_id, 2, Outcome(SUCCEEDED, 0), None)
    assert done is not None and done.status == SUCCEEDED


def test_what_one_control_plane_records_the_other_reads_at_once(open_store: Opener) -> None:
    from ondrop.store.base import StoredService

    first, second = open_store(), open_store()
    first.save_services([StoredService("svc", {"name": "svc"}, "t", 1.0, 1.0)])
    (job_id,) = add(first, "in/a", "svc")
    first.record_output("local.default", "out/a", job_id)
    first.set_meta("k", "v")
    service = second.service("svc")
    assert service is not None and service.definition == {"name": "svc"}
    assert [j.id for j in second.jobs("svc")] == [job_id]
    producer = second.producer("local.default", "out/a")
    assert producer is not None and producer.id == job_id
    assert second.get_meta("k") == "v"
    # a value set once: the first to set it wins, on every control plane
    assert first.first_meta("once", "a") == "a"
    assert second.first_meta("once", "b") == "a" and second.get_meta("once") == "a"
    assert second.delete_service("svc")
    assert first.service("svc") is None and first.count_jobs("svc") == {}


# -- leases: what each control plane holds, and what becomes of it when it dies ----------
def test_a_claim_is_leased_to_its_owner_who_renews_it(open_store: Opener) -> None:
    store = open_store()
    for key in ("a", "b"):
        add(store, key, "svc")
    now = time.time()
    store.claim(1, {}, now, owner="one", lease_until=now + 30)
    store.claim(1, {}, now, owner="two", lease_until=now + 30)
    assert store.renew("one", now + 90) == 1  # only its own running attempts
    assert store.renew("nobody", now + 90) == 0
    add(store, "c", "svc")
    store.claim(1, {}, now)  # by the one control plane of a store: no owner, no lease
    # "two" died: its lease runs out; "one" renewed, so its job is left alone, and so is
    # the one with no lease (only a restart of the store's one control plane takes it).
    assert store.requeue_expired("its control plane died", now=now + 20) == []
    requeued = store.requeue_expired("its control plane died", now=now + 60)
    assert len(requeued) == 1
    (job,) = [store.job(j) for j in requeued]
    assert job is not None and job.status == QUEUED
    (attempt,) = store.attempts(job.id)
    assert (attempt.status, attempt.cause) == (INTERRUPTED, Cause.STOPPED)
    assert store.count_jobs() == {QUEUED: 1, RUNNING: 2}


def test_a_restarted_control_plane_requeues_its_own_jobs_at_once_and_no_live_ones(
    open_store: Opener,
) -> None:
    store = open_store()
    for key in ("mine", "kept", "theirs", "old"):
        add(store, key, "svc")
    now = time.time()
    taken = {}
    for key, owner in (("mine", "me"), ("kept", "me"), ("theirs", "other"), ("old", "")):
        (claim,) = store.claim(1, {}, now, owner=owner, lease_until=now + 30 if owner else None)
        taken[key] = claim.job.id
    again = open_store()  # "me" restarts within its lease; its backend re-attached to "kept"
    requeued = again.requeue_running("restarted", keep=[taken["kept"]], owner="me", now=now + 1)
    # Its own, and one from before leases (no owner); never the live "other"'s.
    assert sorted(requeued) == sorted([taken["mine"], taken["old"]])
    assert {j: again.job(j).status for j in taken.values()} == {  # type: ignore[union-attr]
        taken["mine"]: QUEUED,
        taken["kept"]: RUNNING,
        taken["theirs"]: RUNNING,
        taken["old"]: QUEUED,
    }


def test_a_named_lease_has_one_holder_until_it_runs_out_or_is_released(
    open_store: Opener,
) -> None:
    first, second = open_store(), open_store()
    now = time.time()
    assert first.lease("watchers", "one", now + 30, now)
    assert first.lease("watchers", "one", now + 60, now + 10)  # renewed by its holder
    assert not second.lease("watchers", "two", now + 40, now + 20)
    assert second.lease("collect", "two", now + 30, now)  # another lease: free
    assert second.lease("watchers", "two", now + 100, now + 61)  # "one" let it run out
    assert not first.lease("watchers", "one", now + 120, now + 62)
    second.release("watchers", "one")  # not its holder: nothing happens
    assert not first.lease("watchers", "one", now + 120, now + 63)
    second.release("watchers", "two")
    assert first.lease("watchers", "one", now + 120, now + 64)


def test_live_control_planes_are_listed_and_a_dead_one_drops_out(open_store: Opener) -> None:
    from ondrop.store.base import Replica

    store = open_store()
    store.heartbeat(Replica("one", "http://10.0.0.1:8030", 100.0, 100.0))
    store.heartbeat(Replica("two", "http://10.0.0.2:8030", 150.0, 150.0))
    store.heartbeat(Replica("one", "http://10.0.0.1:8030", 100.0, 200.0))
    assert [r.id for r in store.replicas(seen_since=0)] == ["one", "two"]
    (alive,) = store.replicas(seen_since=180)
    assert alive == Replica("one", "http://10.0.0.1:8030", 100.0, 200.0)


def test_every_change_of_the_services_changes_the_generation(open_store: Opener) -> None:
    from ondrop.store.base import StoredService

    first, second = open_store(), open_store()
    seen = {first.generation()}
    first.save_services([StoredService("svc", {"name": "svc"}, "t", 1.0, 1.0)])
    seen.add(second.generation())
    first.save_services([StoredService("svc", {"name": "svc", "v": 2}, "t", 1.0, 2.0)])
    seen.add(second.generation())
    assert second.delete_service("svc")
    seen.add(first.generation())
    assert len(seen) == 4  # one more at each change, as either control plane reads it


def test_a_cancel_is_asked_of_the_control_plane_that_runs_the_job(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    (job_id,) = add(here, "in/a", "svc")
    (queued_id,) = add(here, "in/b", "other")
    now = time.time()
    here.claim(1, {}, now, pool=None, owner="here", lease_until=now + 30)
    running = here.job(job_id)
    assert running is not None and running.status == RUNNING
    assert not there.request_cancel(queued_id, "by the user")  # not running: nothing asked
    assert there.request_cancel(job_id, "by the user")
    assert here.cancel_requests("there") == []
    assert there.cancel_requests("here") == [(job_id, "by the user")]
    here.finish(job_id, 1, Outcome(CANCELLED, None, "by the user"), None)
    assert here.cancel_requests("here") == []  # it ended: asked no more
    assert not there.request_cancel(job_id, "again")


def test_no_job_is_made_for_a_service_the_store_does_not_have(open_store: Opener) -> None:
    from ondrop.errors import NotFoundError

    here, there = open_store(), open_store()
    saved(here, "kept", "gone")
    assert there.delete_service("gone")  # another control plane deletes it meanwhile
    event = object_event("local.default", "in/a", "1", 1)
    made = here.add_event(event, [NewJob("kept-a", "kept"), NewJob("gone-a", "gone")])
    assert [j.id for j in made] == ["kept-a"]
    assert here.count_jobs("gone") == {} and here.job("gone-a") is None
    with pytest.raises(NotFoundError, match="no service named 'gone'"):
        here.ensure_job(object_event("local.default", "in/b", "1", 1), NewJob("gone-b", "gone"))


def test_usage_counts_a_spans_jobs_and_the_time_their_attempts_ran_in_it(store: Store) -> None:
    saved(store, "svc", "other")
    started = time.time()
    add(store, "in/a", "svc")  # a file's job: asynchronous
    store.add_event(object_event("http", "b", "x", 1), [NewJob("sync-1", "svc", priority=10)])
    add(store, "in/c", "other")
    claims = store.claim(3, {}, started)
    assert len(claims) == 3
    for claim in claims[:2]:
        store.finish(claim.job.id, claim.attempt, Outcome(SUCCEEDED), None)
    ended = time.time()
    used = {u.service: u for u in store.usage(started - 60, ended + 60)}
    assert (used["svc"].sync, used["svc"].asynchronous, used["other"].asynchronous) == (1, 1, 1)
    # The attempts ran from `started` on: two ended, one still running (counted up to now).
    assert 0 <= used["svc"].seconds + used["other"].seconds <= 3 * (time.time() - started) + 1e-6
    assert store.usage(started - 120, started - 60) == []  # before any of it
    # A span that ends in the middle counts only the part inside it.
    later = {u.service: u for u in store.usage(started + 3600, started + 7200)}
    assert all(u.seconds == 0 and u.sync == 0 for u in later.values())
