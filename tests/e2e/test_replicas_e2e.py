"""End to end: several `ondrop up` control planes on one PostgreSQL store and one shared
folder serve the same services and jobs: apply on one, upload to another, /run anywhere,
cancel from either; one killed (-9) at any moment loses nothing, runs nothing twice."""

from __future__ import annotations

import functools
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ondrop.client import Client
from ondrop.errors import ClientError
from tests.support.servers import Postgres
from tests.support.up import Platform
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

UPPER = """#!/bin/sh
name=$(basename "$INPUT_FILE_PATH")
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.upper"
"""
SLEEPER = """#!/bin/sh
echo started
sleep 600
"""


def write_fdl(folder: Path) -> Path:
    (folder / "upper.sh").write_text(UPPER)
    (folder / "sleeper.sh").write_text(SLEEPER)
    fdl = folder / "replicas.yaml"
    fdl.write_text("""
functions:
  oscar:
  - local:
      name: upper
      script: upper.sh
      input: [{storage_provider: minio, path: docs/in}]
      output: [{storage_provider: minio, path: docs/out}]
  - local:
      name: sleeper
      script: sleeper.sh
""")
    return fdl


class Replicas:
    """Control planes on one store and one shared folder, each on a data folder of its own."""

    def __init__(self, tmp_path: Path, url: str, count: int) -> None:
        self.url = url
        self.shared = tmp_path / "shared"
        self.planes = [Platform(tmp_path / f"plane{i}") for i in range(count)]
        self.clients: list[Client] = []

    def start(self, index: int) -> None:
        plane = self.planes[index]
        plane.start("--store", self.url, "--shared-folder", str(self.shared), timeout=60)

    def client(self, index: int) -> Client:
        """The admin's client of one of them (closed with them)."""
        self.clients.append(self.planes[index].client())
        return self.clients[-1]

    def replica_id(self, index: int) -> str:
        return (self.planes[index].data / "replica").read_text().strip()

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for plane in self.planes:
            if plane.proc is not None and plane.proc.poll() is None:
                plane.stop()


@pytest.fixture
def replicas(postgres: Postgres, tmp_path: Path) -> Iterator[Replicas]:
    made = Replicas(tmp_path, postgres.database(), 2)
    try:
        made.start(0)
        made.start(1)
        yield made
    finally:
        made.stop()


def owner_of(url: str, job_id: str) -> str:
    """The control plane the job's running attempt is leased to, read from the store."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT a.owner FROM attempts a JOIN jobs j ON j.id = a.job_id "
            "AND j.attempts = a.number WHERE j.id = %s AND a.status = 'running'",
            (job_id,),
        ).fetchone()
    return str(row[0]) if row else ""


def test_control_planes_on_one_store_serve_the_same_services_and_jobs(
    replicas: Replicas, tmp_path: Path
) -> None:
    first, second = replicas.client(0), replicas.client(1)
    alive = first.status()["replicas"]
    assert sorted(r["id"] for r in alive) == sorted(replicas.replica_id(i) for i in (0, 1))
    assert all(r["address"].startswith("http://") for r in alive)
    # A third one given another shared folder by mistake is refused, saying what to give.
    astray = Platform(tmp_path / "astray")
    with pytest.raises(AssertionError) as caught:
        astray.start("--store", replicas.url, "--shared-folder", str(tmp_path / "elsewhere"))
    said = str(caught.value)
    assert "is not the one the other control planes on the store" in said
    assert "Traceback" not in said
    shown = replicas.planes[1].cli("status").stdout
    assert "control planes on the store" in shown
    assert all(replicas.replica_id(i) in shown for i in (0, 1))

    applied = replicas.planes[0].cli("apply", str(write_fdl(tmp_path))).stdout
    assert "created upper" in applied
    assert {s["name"] for s in second.services()} == {"upper", "sleeper"}  # read at once

    # Uploaded to the second: the job runs on either, its output is in the shared folder.
    (tmp_path / "sent.txt").write_text("sent\n")
    answer = second.upload("minio.default", "docs/in/sent.txt", tmp_path / "sent.txt")
    assert answer["jobs"], answer
    out = replicas.shared / "storage" / "docs" / "out" / "sent.txt.upper"
    assert wait_for(out.exists, timeout=60) and out.read_text() == "SENT\n"

    # Dropped into the shared folder: one of them watches it; one job, once.
    inbox = replicas.shared / "storage" / "docs" / "in"
    (inbox / "dropped.txt").write_text("dropped\n")
    dropped = replicas.shared / "storage" / "docs" / "out" / "dropped.txt.upper"
    assert wait_for(dropped.exists, timeout=60) and dropped.read_text() == "DROPPED\n"

    # /run on each: the answer comes wherever the job ran (its body and its result are
    # on the shared folder).
    for client in (first, second):
        for i in range(4):
            output = client.run("upper", f"run {i}\n".encode(), filename=f"r{i}.txt")
            assert output.data == f"RUN {i}\n".encode()
    jobs = first.jobs("upper")
    assert jobs == second.jobs("upper")  # one list, read from either
    assert len(jobs) == 10 and {j["status"] for j in jobs.values()} == {"Succeeded"}

    # A cancel asked of the control plane that does not run the job reaches the one that
    # does.
    job_id = first.submit("sleeper", b"x")
    owner = wait_for(lambda: owner_of(replicas.url, job_id), timeout=60)
    other = second if owner == replicas.replica_id(0) else first
    assert other.cancel("sleeper", job_id) == "Running"
    wait_for(lambda: first.job("sleeper", job_id)["status"] == "Cancelled", timeout=60)

    # A service deleted on one gets no new jobs on the other.
    second.delete_service("upper")
    with pytest.raises(ClientError):
        first.run("upper", b"late\n")
    assert "upper" not in {s["name"] for s in first.services()}


ROUNDS = 3
FILES = 500


def test_a_control_plane_killed_at_any_moment_loses_nothing_and_runs_nothing_twice(
    replicas: Replicas, tmp_path: Path
) -> None:
    """3 rounds of 500 uploads spread over two control planes; each round one of them is
    killed (-9) at a random moment and started again. Every input gets exactly one output,
    every job succeeds once, and an attempt taken over never writes."""
    replicas.planes[0].cli("apply", str(write_fdl(tmp_path)))
    source = tmp_path / "file.txt"
    rng = random.Random(14)
    uploaded: set[str] = set()
    for round_ in range(ROUNDS):
        victim = round_ % 2
        names = [f"r{round_}-{i:03}.txt" for i in range(FILES)]
        kill_after = rng.randrange(FILES // 5, FILES - FILES // 5)
        clients = [replicas.client(0), replicas.client(1)]
        killed = threading.Event()
        for i, name in enumerate(names):
            if i == kill_after:
                replicas.planes[victim].stop(signal.SIGKILL)
                killed.set()
            source.write_text(f"{name}\n")
            order = [i % 2, 1 - i % 2]  # spread; on to the other if that one is down
            if killed.is_set():
                order = [1 - victim]
            for index in order:
                try:
                    clients[index].upload("minio.default", f"docs/in/{name}", source)
                    uploaded.add(name)
                    break
                except (ClientError, httpx.HTTPError):
                    continue  # it was killed meanwhile: the other one takes it
            else:
                raise AssertionError(f"no control plane took {name}")
        replicas.start(victim)  # the same data folder: it takes its own attempts back
        done = wait_for(functools.partial(_finished, clients[1 - victim], len(uploaded)), 300)
        assert done == {"Succeeded": len(uploaded)}

    outputs = replicas.shared / "storage" / "docs" / "out"
    assert sorted(p.name for p in outputs.iterdir()) == sorted(f"{n}.upper" for n in uploaded)
    for name in uploaded:
        assert (outputs / f"{name}.upper").read_text() == f"{name.upper()}\n"
    jobs = replicas.client(1).jobs("upper")
    assert len(jobs) == len(uploaded) == ROUNDS * FILES  # one job per input
    _no_late_writes(replicas.url)


def _finished(client: Client, count: int) -> dict[str, int] | None:
    counts = client.status("upper")["jobs"]
    if counts.get("queued") or counts.get("running") or sum(counts.values()) < count:
        return None
    return {"Succeeded": counts.get("succeeded", 0)} if set(counts) == {"succeeded"} else counts


def _no_late_writes(url: str) -> None:
    """Every output was written by its job's last attempt's control plane (the one that
    succeeded): none by an attempt that was taken back."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT j.id, COUNT(*) FILTER (WHERE a.status = 'succeeded'), COUNT(*) "
            "FROM jobs j JOIN attempts a ON a.job_id = j.id GROUP BY j.id"
        ).fetchall()
        outputs = conn.execute("SELECT job_id, COUNT(*) FROM outputs GROUP BY job_id").fetchall()
    assert all(succeeded == 1 for _, succeeded, _ in rows)
    assert {job for job, _ in outputs} == {job for job, _, _ in rows}
    assert all(count == 1 for _, count in outputs)
    again = sum(attempts - 1 for _, _, attempts in rows)
    print(f"{again} attempt(s) taken back from a killed control plane and run again")
