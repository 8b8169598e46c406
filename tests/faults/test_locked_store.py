"""The database held locked by another process: requests that must record something
answer 503 with Retry-After, and an upload answered with an error was neither kept nor
processed (one answered 2xx was processed): never both. A job that ends meanwhile is
recorded once the lock is gone, without a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ondrop.platform import Platform
from tests.faults.test_disk_full import Gate, running, settings_on
from tests.support.waiting import wait_for


@contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the store's write lock."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def apply_copy(api: httpx.Client) -> str:
    answer = api.post(
        "/system/apply",
        json={
            "services": [
                {
                    "name": "copy",
                    "script": 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"',
                    "input": [{"storage_provider": "local.default", "path": "in"}],
                    "output": [{"storage_provider": "local.default", "path": "out"}],
                }
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    return str(api.get("/system/services/copy").json()["token"])


def test_an_upload_meeting_a_locked_database_is_refused_with_503_and_never_processed(
    api: httpx.Client, platform: Platform
) -> None:
    apply_copy(api)
    with locked(platform.data / "ondrop.db"):
        during = api.put("/system/files/local.default/in/during.txt", content=b"during")
    store = platform.providers.get("local.default")
    # Once the lock is gone, a later upload goes through and is processed: whatever the
    # platform would have done about the first one, it has done by the time this is done.
    after = api.put("/system/files/local.default/in/after.txt", content=b"after")
    assert after.status_code == 201, after.text
    (job,) = after.json()["jobs"]
    wait_for(lambda: (j := platform.store.job(job["job"])) is not None and j.status == "succeeded")
    wait_for(lambda: store.stat("out/after.txt"))

    inputs = {j.input_key for j in platform.store.jobs("copy")}
    processed = "in/during.txt" in inputs
    assert processed == (during.status_code < 300), (during.status_code, during.text)
    if not processed:
        assert store.stat("in/during.txt") is None  # not kept either
        assert store.stat("out/during.txt") is None
    # A lock held for longer than the store waits: refused, and told when to come back.
    assert during.status_code == 503, during.text
    assert int(during.headers["Retry-After"]) > 0
    assert "locked" in during.json()["detail"]


def test_an_invocation_meeting_a_locked_database_is_refused_with_503_and_never_runs(
    api: httpx.Client, platform: Platform
) -> None:
    token = apply_copy(api)
    bearer = {"Authorization": f"Bearer {token}"}
    with locked(platform.data / "ondrop.db"):
        during = httpx.post(
            f"{api.base_url}/job/copy", content=b'{"n": 1}', headers=bearer, timeout=30
        )
    assert during.status_code == 503, during.text
    assert int(during.headers["Retry-After"]) > 0
    after = httpx.post(f"{api.base_url}/job/copy", content=b'{"n": 2}', headers=bearer)
    assert after.status_code == 201, after.text
    job = after.json()["job_id"]
    wait_for(lambda: (j := platform.store.job(job)) is not None and j.status == "succeeded")
    assert [j.id for j in platform.store.jobs("copy")] == [job]
    # The refused body was not kept (and the job that ran discarded its own).
    wait_for(lambda: not any((platform.data / "payloads").iterdir()))


def test_a_job_that_ends_while_the_database_is_locked_is_recorded_once_it_is_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()  # the job of `hold` runs until the test lets it end
    with running(settings_on(tmp_path / "data"), gate) as (platform, api):
        answer = api.post(
            "/system/apply",
            json={
                "services": [
                    {
                        "name": "hold",
                        "script": "true",
                        "input": [{"storage_provider": "local.default", "path": "hold"}],
                    }
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        put = api.put("/system/files/local.default/hold/x", content=b"x")
        assert put.status_code == 201, put.text
        (job,) = [j["job"] for j in put.json()["jobs"]]
        assert gate.holding.wait(30)
        with locked(platform.data / "ondrop.db"):
            gate.opened.set()  # it ends now, and its end cannot be recorded
            wait_for(lambda: "cannot record its end yet" in caplog.text)
        wait_for(lambda: (j := platform.store.job(job)) is not None and j.status == "succeeded")
        assert [a.status for a in platform.store.attempts(job)] == ["succeeded"]
