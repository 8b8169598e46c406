"""The two pools on a real platform: GPUs given whole, hybrid jobs moving from faas to
batch, batch jobs beyond the faas limits, resources that make jobs wait, and workers
that exist only while there is work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ondrop import Client
from ondrop.backends import local as backends_local
from ondrop.errors import ClientError
from ondrop.platform import Platform
from ondrop.settings import Settings
from tests.conftest import ADMIN, listening_socket, serving
from tests.support.waiting import wait_for

Make = Callable[..., tuple[Platform, Client]]

# Writes when it started and ended, and which GPUs it saw, into its output.
TIMED = """#!/bin/sh
start=$(date +%s.%N)
sleep "${NAP:-0.6}"
echo "$start $(date +%s.%N) [$CUDA_VISIBLE_DEVICES]" > "$TMP_OUTPUT_DIR/span"
"""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    with ExitStack() as stack:
        made = iter(range(100))

        def build(**settings: Any) -> tuple[Platform, Client]:
            values = {
                "data": tmp_path / f"data{next(made)}",
                "admin_password": ADMIN.password,
                "container_engine": "none",
                "concurrency": 4,
                "gpus": "0",
                **settings,
            }
            platform = Platform(Settings.load(values, environ={}))
            platform.start()
            stack.callback(platform.stop)
            url = stack.enter_context(serving(platform, listening_socket()))
            client = stack.enter_context(Client(url, ADMIN.user, ADMIN.password))
            return platform, client

        yield build


def spans(platform: Platform, service: str) -> list[tuple[float, float, str]]:
    """(start, end, GPUs seen) of each finished job of `service`, from their outputs."""
    found = []
    store = platform.providers.get("minio.default")
    for info in store.list(f"{service}/out"):
        with store.open(info.key) as f:
            start, end, gpus = f.read().decode().split()
        found.append((float(start), float(end), gpus.strip("[]")))
    return sorted(found)


def timed(name: str, **extra: Any) -> dict[str, Any]:
    # Each job writes to its own folder (the input's name), so outputs do not overwrite.
    return {
        "name": name,
        "script": TIMED.replace('"$TMP_OUTPUT_DIR/span"', '"$TMP_OUTPUT_DIR/$JOB_UUID"'),
        "output": [{"path": f"{name}/out"}],
        **extra,
    }


def test_two_jobs_wanting_the_only_gpu_run_one_after_the_other_on_it(make: Make) -> None:
    platform, client = make(gpus="1")
    client.apply([timed("train", gpu=1)])
    jobs = [client.submit("train", b"{}") for _ in range(2)]
    wait_for(lambda: all(client.job("train", j)["status"] == "Succeeded" for j in jobs))
    (_s1, e1, g1), (s2, _e2, g2) = spans(platform, "train")
    assert g1 == g2 == "0"
    assert s2 >= e1 - 0.05, "two jobs shared the only GPU"
    assert {client.job("train", j)["pool"] for j in jobs} == {"batch"}


def test_two_gpus_are_given_one_each_and_used_at_once(make: Make) -> None:
    platform, client = make(gpus="0,3")
    client.apply([timed("train", gpu=1)])
    jobs = [client.submit("train", b"{}") for _ in range(2)]
    wait_for(lambda: all(client.job("train", j)["status"] == "Succeeded" for j in jobs))
    (_s1, e1, g1), (s2, _e2, g2) = spans(platform, "train")
    assert {g1, g2} == {"0", "3"}
    assert s2 < e1, "with a GPU each, the two jobs should overlap"


def test_a_gpu_service_is_refused_without_gpus_unless_it_may_run_on_the_cpu(make: Make) -> None:
    platform, client = make(gpus="0")
    with pytest.raises(ClientError, match="asks for 1 GPU"):
        client.apply([timed("needs", gpu=1)])
    client.apply([timed("prefers", gpu=1, gpu_optional=True)])
    job = client.submit("prefers", b"{}")
    wait_for(lambda: client.job("prefers", job)["status"] == "Succeeded")
    ((_, _, gpus),) = spans(platform, "prefers")
    assert gpus == ""  # no GPU to see


def test_a_hybrid_job_that_outgrows_faas_succeeds_on_batch_with_both_attempts(
    make: Make,
) -> None:
    _, client = make(faas_max_timeout=1.0)
    client.apply([{"name": "grow", "mode": "hybrid", "script": "sleep 2"}])
    job = client.submit("grow", b"{}")
    detail = wait_for(lambda: (d := client.job("grow", job))["status"] == "Succeeded" and d)
    attempts = detail["attempt_list"]
    assert [(a["pool"], a["status"]) for a in attempts] == [
        ("faas", "failed"),
        ("batch", "succeeded"),
    ]
    assert attempts[0]["reason"] == "timed out after 1 s"


def test_a_batch_job_may_run_longer_than_the_faas_limit(make: Make) -> None:
    _, client = make(faas_max_timeout=1.0)
    client.apply([{"name": "long", "mode": "batch", "script": "sleep 2"}])
    job = client.submit("long", b"{}")
    detail = wait_for(lambda: (d := client.job("long", job))["status"] == "Succeeded" and d)
    assert [a["pool"] for a in detail["attempt_list"]] == ["batch"]
    assert detail["duration"] >= 2


def test_a_faas_job_is_held_to_the_faas_limit_whatever_its_own_timeout(make: Make) -> None:
    _, client = make(faas_max_timeout=1.0)
    client.apply([{"name": "short", "timeout": 60, "script": "sleep 5"}])
    job = client.submit("short", b"{}")
    detail = wait_for(lambda: (d := client.job("short", job))["status"] == "Failed" and d)
    assert detail["reason"] == "timed out after 1 s"


def test_batch_jobs_wait_for_the_cpus_they_ask_for(make: Make) -> None:
    platform, client = make(batch_cpus=2.0)
    client.apply([timed("wide", mode="batch", cpu="2")])
    with pytest.raises(ClientError, match="asks for 4 CPUs and the batch pool has 2"):
        client.apply([timed("too-wide", mode="batch", cpu="4")])
    jobs = [client.submit("wide", b"{}") for _ in range(2)]
    wait_for(lambda: all(client.job("wide", j)["status"] == "Succeeded" for j in jobs))
    (_s1, e1, _), (s2, _e2, _) = spans(platform, "wide")
    assert s2 >= e1 - 0.05, "two jobs holding 2 CPUs each ran at once on 2 CPUs"


def test_large_inputs_of_a_hybrid_service_go_straight_to_batch(make: Make) -> None:
    _, client = make()
    client.apply([{"name": "mixed", "mode": "hybrid", "batch_above": "100", "script": "true"}])
    small, big = client.submit("mixed", b"x" * 10), client.submit("mixed", b"x" * 1000)
    assert client.job("mixed", small)["pool"] == "faas"
    assert client.job("mixed", big)["pool"] == "batch"


def test_workers_exist_only_while_there_is_work(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job thread waits THREAD_IDLE seconds for the next job, then ends."""

    def workers() -> set[int]:
        return {
            t.ident
            for t in threading.enumerate()
            if t.name.startswith("ondrop-job-") and t.ident is not None
        }

    platform, client = make()
    # Each job waits until the test lets it end (a file in its own tmp folder), so three
    # of them surely run at once, however slow the machine.
    client.apply([{"name": "hold", "script": 'while [ ! -e "$TMPDIR/go" ]; do sleep 0.02; done'}])
    assert workers() == set()

    def release() -> None:
        for tmp in (platform.data / "work").glob("*/tmp"):
            (tmp / "go").write_text("")

    def finish(jobs: list[str]) -> None:
        def done() -> bool:
            release()
            return all(client.job("hold", j)["status"] == "Succeeded" for j in jobs)

        wait_for(done)
        for go in (platform.data / "work").glob("*/tmp/go"):  # none for the next jobs
            go.unlink()

    monkeypatch.setattr(backends_local, "THREAD_IDLE", 0.5)  # threads end soon after their job
    finish([client.submit("hold", b"{}")])
    wait_for(lambda: workers() == set())
    monkeypatch.setattr(backends_local, "THREAD_IDLE", 600.0)  # threads wait for the next job
    jobs = [client.submit("hold", b"{}") for _ in range(3)]
    three = wait_for(lambda: len(found := workers()) == 3 and found)
    finish(jobs)
    finish([client.submit("hold", b"{}")])  # taken by one of the waiting threads
    assert workers() == three


def test_status_shows_both_pools(make: Make) -> None:
    _, client = make(gpus="2", batch_cpus=3.0)
    pools = client.status()["pools"]
    assert pools["faas"]["concurrency"] == 4 and pools["faas"]["max_timeout"] == 900
    assert (pools["batch"]["cpus"], pools["batch"]["gpus"]) == (3.0, ["0", "1"])
