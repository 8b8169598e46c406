"""The PostgreSQL store going down and coming back while the platform runs: requests that
must record something answer 503 with Retry-After, naming the store; an upload answered
so was neither kept nor processed; a job that ends meanwhile is recorded once the
database is back; and work resumes without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.test_disk_full import Gate, running, settings_on
from tests.faults.test_locked_store import apply_copy
from tests.support.servers import postgres_server
from tests.support.waiting import wait_for


def test_the_database_down_answers_503_loses_nothing_and_work_resumes_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_server() as server:
        settings = settings_on(tmp_path / "data").with_(store=server.database())
        gate = Gate()  # the job of `hold` runs until the test lets it end
        with running(settings, gate) as (platform, api):
            apply_copy(api)
            hold = {"name": "hold", "script": "true"}
            hold["input"] = [{"storage_provider": "local.default", "path": "hold"}]  # type: ignore[assignment]
            assert api.post("/system/apply", json={"services": [hold]}).status_code == 200
            put = api.put("/system/files/local.default/hold/x", content=b"x")
            assert put.status_code == 201, put.text
            (held,) = [j["job"] for j in put.json()["jobs"]]
            assert gate.holding.wait(30)

            server.stop()
            during = api.put("/system/files/local.default/in/during.txt", content=b"during")
            assert during.status_code == 503, during.text
            assert int(during.headers["Retry-After"]) > 0
            detail = during.json()["detail"]
            assert "cannot be reached" in detail and f":{server.port}/" in detail
            gate.opened.set()  # the held job ends while its end cannot be recorded
            wait_for(lambda: "cannot record its end yet" in caplog.text)

            server.start()
            after = api.put("/system/files/local.default/in/after.txt", content=b"after")
            assert after.status_code == 201, after.text
            (job,) = [j["job"] for j in after.json()["jobs"]]
            store = platform.providers.get("local.default")
            wait_for(lambda: (j := platform.store.job(job)) and j.status == "succeeded")
            wait_for(lambda: (j := platform.store.job(held)) and j.status == "succeeded")
            assert [a.status for a in platform.store.attempts(held)] == ["succeeded"]
            assert store.stat("out/after.txt") is not None
            assert {j.input_key for j in platform.store.jobs("copy")} == {"in/after.txt"}
            assert store.stat("in/during.txt") is None  # refused: not kept either
