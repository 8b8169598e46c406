"""OSCAR's /system/metrics (pkg/handlers/metrics.go, pkg/types/metrics.go: the summary,
the breakdown by service in JSON and CSV, one service's metrics) and its service check
/system/services/{name}/auth (pkg/handlers/service_auth.go)."""

from __future__ import annotations

import base64
import csv
import io
from typing import Any

import httpx

from ondrop.platform import Platform
from tests.support.waiting import wait_for

SERVICE = {"name": "count", "script": "sleep 0.2; wc -c < $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/n"}


def ran(api: httpx.Client, platform: Platform) -> dict[str, Any]:
    """The service, one /run and one /job of it ended."""
    made = api.post("/system/services", json={**SERVICE, "cpu": "0.5"})
    assert made.status_code == 201, made.text
    assert api.post("/run/count", content=b"abc").status_code == 200
    job = api.post("/job/count", content=b"abcd").json()["job_id"]
    wait_for(lambda: (j := platform.store.job(job)) is not None and j.finished_at is not None)
    return dict(made.json())


def test_the_summary_counts_requests_and_cpu_hours_of_a_span(
    api: httpx.Client, platform: Platform
) -> None:
    ran(api, platform)
    summary = api.get("/system/metrics")
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert set(body) == {"start", "end", "totals", "sources"}
    totals = body["totals"]
    assert (totals["requests_count_sync"], totals["requests_count_async"]) == (1, 1)
    assert totals["requests_count_total"] == 2 and totals["requests_count_exposed"] == 0
    assert (totals["services_count_total"], totals["services_count_active"]) == (1, 1)
    # Two jobs of at least 0.2 s each, at half a core.
    assert totals["cpu_hours_total"] >= 2 * 0.2 * 0.5 / 3600
    assert totals["gpu_hours_total"] == 0
    assert {s["name"]: s["status"] for s in body["sources"]}["users"] == "unavailable"
    # A span before any of it: nothing.
    before = api.get("/system/metrics", params={"end": "2020-01-01T00:00:00Z"}).json()
    assert before["start"] == "2019-12-31T00:00:00Z"
    assert before["totals"]["requests_count_total"] == 0
    assert before["totals"]["cpu_hours_total"] == 0
    wrong = api.get(
        "/system/metrics", params={"start": "2026-02-01T00:00:00Z", "end": "2026-01-01"}
    )
    assert wrong.status_code == 422 and "is before start" in wrong.json()["detail"]
    bad = api.get("/system/metrics", params={"start": "yesterday"})
    assert bad.status_code == 422 and "RFC 3339" in bad.json()["detail"]


def test_the_breakdown_is_by_service_in_json_and_csv(api: httpx.Client, platform: Platform) -> None:
    ran(api, platform)
    body = api.get("/system/metrics/breakdown", params={"group_by": "service"}).json()
    assert body["group_by"] == "service"
    (item,) = body["items"]
    assert item["key"] == "count"
    assert (item["requests_count_sync"], item["requests_count_async"]) == (1, 1)
    exported = api.get("/system/metrics/breakdown", params={"group_by": "service", "format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows[0]["key"] == "count" and rows[0]["requests_count_total"] == "2"
    by_user = api.get("/system/metrics/breakdown", params={"group_by": "user"})
    assert by_user.status_code == 422 and "by service only" in by_user.json()["detail"]
    odd = api.get("/system/metrics/breakdown", params={"group_by": "service", "format": "xml"})
    assert odd.status_code == 422


def test_one_services_metrics_all_or_one(api: httpx.Client, platform: Platform) -> None:
    ran(api, platform)
    every = api.get("/system/metrics/count").json()
    assert every["service_name"] == "count"
    values = {m["metric"]: m["value"] for m in every["metrics"]}
    assert list(values) == [
        "cpu-hours",
        "gpu-hours",
        "requests-sync-per-service",
        "requests-async-per-service",
        "requests-exposed-per-service",
        "users-per-service",
    ]
    assert values["requests-sync-per-service"] == 1 and values["cpu-hours"] > 0
    one = api.get("/system/metrics/count", params={"metric": "requests-async-per-service"})
    assert (one.json()["service_id"], one.json()["value"]) == ("count", 1)
    assert api.get("/system/metrics/count", params={"metric": "x"}).status_code == 422
    assert api.get("/system/metrics/nothing").status_code == 404


def test_a_service_auth_check_answers_who_may_use_it(
    api: httpx.Client, anon: httpx.Client, platform: Platform
) -> None:
    token = ran(api, platform)["token"]
    assert api.get("/system/services/count/auth").status_code == 200  # the admin
    basic = base64.b64encode(f"count:{token}".encode()).decode()
    assert (
        anon.get(
            "/system/services/count/auth", headers={"Authorization": f"Basic {basic}"}
        ).status_code
        == 200
    )
    bearer = {"Authorization": f"Bearer {token}"}
    assert anon.get("/system/services/count/auth", headers=bearer).status_code == 200
    assert anon.get("/system/services/count/auth").status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert anon.get("/system/services/count/auth", headers=wrong).status_code == 401
    assert api.get("/system/services/nothing/auth").status_code == 404
