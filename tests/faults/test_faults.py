"""Fault tests 2-4 and the retry and cancel controls: a job killed mid-run, a store that
goes away during a burst, a script that always fails; every time, nothing is lost."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ondrop import Client
from ondrop.platform import Platform
from ondrop.pools import dispatch, policy
from tests.api.test_stores import bundled, s3_client  # noqa: F401  (the bundled fixture)
from tests.conftest import ADMIN
from tests.support.waiting import processes_with, wait_for


@pytest.fixture
def client(base_url: str) -> Iterator[Client]:
    with Client(base_url, ADMIN.user, ADMIN.password) as c:
        yield c


def test_a_job_killed_by_a_signal_mid_run_is_retried_and_succeeds(
    client: Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "backoff", lambda attempt: 0.1)
    marker = f"ondrop-fault-{time.monotonic_ns()}"
    client.apply(
        [
            {
                "name": "victim",
                "retries": 1,
                "output": [{"path": "victim/out"}],
                "script": f'#!/bin/bash\nif [ "$JOB_ATTEMPT" = 1 ]; then exec -a {marker} '
                'sleep 30; fi\necho survived > "$TMP_OUTPUT_DIR/done.txt"\n',
            }
        ]
    )
    job = client.submit("victim", b"{}")
    (pid,) = wait_for(lambda: processes_with(marker))
    import os

    os.kill(pid, signal.SIGKILL)
    detail = wait_for(lambda: (d := client.job("victim", job))["status"] == "Succeeded" and d)
    attempts = detail["attempt_list"]
    assert [a["status"] for a in attempts] == ["failed", "succeeded"]
    assert attempts[0]["reason"] == "killed by SIGKILL"


def test_a_script_that_always_fails_ends_failed_with_every_attempt_then_retry_after_a_fix(
    client: Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "backoff", lambda attempt: 0.05)
    broken = {
        "name": "flaky",
        "retries": 2,
        "output": [{"path": "flaky/out"}],
        "script": 'echo "attempt $JOB_ATTEMPT failing"; exit 3',
    }
    client.apply([broken])
    jobs = [client.submit("flaky", b"{}") for _ in range(3)]
    wait_for(lambda: all(client.job("flaky", j)["status"] == "Failed" for j in jobs))
    detail = client.job("flaky", jobs[0])
    assert (detail["attempts"], detail["reason"]) == (3, "exit status 3")
    log = client.logs("flaky", jobs[0])
    for n in (1, 2, 3):
        assert f"--- attempt {n}: exit status 3 ---\nattempt {n} failing" in log
    client.apply([{**broken, "script": 'echo fixed > "$TMP_OUTPUT_DIR/ok.txt"'}])
    assert sorted(client.retry("flaky")) == sorted(jobs)
    wait_for(lambda: all(client.job("flaky", j)["status"] == "Succeeded" for j in jobs))
    assert client.job("flaky", jobs[0])["attempts"] == 4


def test_cancel_stops_a_running_job_and_drops_a_queued_one_and_retry_runs_them_again(
    client: Client, platform: Platform
) -> None:
    client.apply([{"name": "slow", "max_concurrency": 1, "script": "sleep 30"}])
    running, queued = client.submit("slow", b"{}"), client.submit("slow", b"{}")
    wait_for(lambda: client.job("slow", running)["status"] == "Running")
    assert client.cancel("slow", queued) == "Cancelled"
    started = time.monotonic()
    assert client.cancel("slow", running) == "Running"  # being stopped
    wait_for(lambda: client.job("slow", running)["status"] == "Cancelled", timeout=10)
    assert time.monotonic() - started < 10
    assert client.job("slow", running)["reason"] == "cancelled by the user"
    with pytest.raises(Exception, match="already ended"):
        client.cancel("slow", running)
    client.apply([{"name": "slow", "script": "true"}])
    assert client.retry("slow", queued) == [queued]
    wait_for(lambda: client.job("slow", queued)["status"] == "Succeeded")


def test_a_storage_outage_during_a_burst_delays_jobs_but_fails_none(
    bundled: tuple[Platform, httpx.Client],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform, api = bundled
    assert platform.object_store is not None
    monkeypatch.setattr(dispatch, "STORE_RETRY_CAP", 2.0)
    monkeypatch.setattr(policy, "STORE_RETRY_CAP", 2.0)
    api.post(
        "/system/apply",
        json={
            "services": [
                {
                    "name": "copy",
                    "script": 'sleep 0.2; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"',
                    "input": [{"path": "burst/in"}],
                    "output": [{"path": "burst/out"}],
                }
            ]
        },
    )
    s3 = s3_client(api)
    for i in range(30):
        s3.put_object(Bucket="burst", Key=f"in/f{i:02}.txt", Body=f"file {i}".encode())
    wait_for(lambda: len(api.get("/system/logs/copy").json()["jobs"]) == 30, timeout=20)
    platform.object_store.stop()  # the store goes away while the burst is processed
    outage = threading.Event()
    threading.Timer(10.0, outage.set).start()
    outage.wait()
    platform.object_store.start(f"{platform.url}/events/seaweedfs")
    try:
        wait_for(lambda: platform.store.count_jobs("copy") == {"succeeded": 30}, timeout=120)
    except AssertionError:
        ended = {
            j.id: [(a.status, a.reason) for a in platform.store.attempts(j.id)]
            for j in platform.store.jobs("copy")
            if j.status != "succeeded"
        }
        raise AssertionError(f"not all succeeded: {ended}") from None
    unavailable = sum(
        a.status == "unavailable"
        for j in platform.store.jobs("copy")
        for a in platform.store.attempts(j.id)
    )
    assert unavailable > 0, "the outage should have been noticed"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="burst", Prefix="out/")["Contents"]}
    assert keys == {f"out/f{i:02}.txt" for i in range(30)}
