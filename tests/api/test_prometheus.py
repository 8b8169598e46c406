"""/metrics, read with prometheus-client's own parser after a known workload: two jobs
that succeed, one that fails, a provider that cannot be listed, and the requests that
made them."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.types import Message, Receive, Scope, Send

from ondrop.api.metered import Metered
from ondrop.events.base import Event
from ondrop.jobs import Cause
from ondrop.settings import Settings
from ondrop.store.base import FAILED, RUNNING, Claim, Job, Outcome
from ondrop.telemetry import Telemetry
from tests.conftest import ADMIN
from tests.support.servers import free_port, unavailable, webdav_server
from tests.support.waiting import wait_for


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(poll_interval=0.2)  # the provider that goes away is seen soon


def samples(api: httpx.Client) -> list[Sample]:
    answer = api.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parsed(answer.text)


def parsed(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, read with prometheus-client's parser."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def finished(api: httpx.Client, service: str, count: int) -> bool:
    jobs = api.get(f"/system/logs/{service}").json()["jobs"].values()
    done = [j for j in jobs if j["status"] in ("Succeeded", "Failed")]
    return len(done) == count


def test_the_metrics_count_a_known_workload(
    api: httpx.Client, anon: httpx.Client, tmp_path: Path
) -> None:
    assert anon.get("/metrics").status_code == 401
    for name, script in (("ok", "true"), ("bad", "exit 3")):
        body = {"name": name, "script": script, "input": [{"path": f"{name}/in"}]}
        assert api.post("/system/services", json=body).status_code == 201
    with webdav_server(tmp_path / "dav") as dav:  # there at apply, gone after
        far = {"hostname": dav.url, "login": dav.user, "password": dav.password}
        on_down = {
            "name": "far",
            "script": "true",
            "input": [{"storage_provider": "webdav.down", "path": "far/in"}],
            "storage_providers": {"webdav": {"down": far}},
        }
        made = api.post("/system/services", json=on_down)
        assert made.status_code == 201, made.text
    for key in ("ok/in/a.txt", "ok/in/b.txt", "bad/in/c.txt"):
        assert api.put(f"/system/files/minio.default/{key}", content=b"x").status_code < 300
    wait_for(lambda: finished(api, "ok", 2) and finished(api, "bad", 1), timeout=30)

    def with_a_storage_error() -> list[Sample] | None:
        got = samples(api)
        return got if value(got, "ondrop_storage_errors_total") else None

    found = wait_for(with_a_storage_error, timeout=30)
    assert value(found, "ondrop_jobs_started_total", service="ok", pool="faas") == 2
    assert value(found, "ondrop_jobs_started_total", service="bad") == 1
    assert value(found, "ondrop_jobs_succeeded_total", service="ok", pool="faas") == 2
    assert value(found, "ondrop_jobs_succeeded_total", service="bad") == 0
    assert value(found, "ondrop_jobs_failed_total", service="bad", cause="exit") == 1
    assert value(found, "ondrop_job_run_seconds_count", service="ok") == 2
    assert value(found, "ondrop_job_wait_seconds_count") == 3
    assert value(found, "ondrop_job_run_seconds_bucket", service="ok", le="+Inf") == 2
    assert value(found, "ondrop_storage_errors_total", provider="webdav.down") >= 1
    assert value(found, "ondrop_jobs_queued", pool="faas") == 0
    assert value(found, "ondrop_jobs_queued", pool="batch") == 0
    assert value(found, "ondrop_jobs_running") == 0
    made_services = value(
        found, "ondrop_http_requests_total", route="/system/services", method="POST", status="201"
    )
    assert made_services == 3
    assert value(found, "ondrop_http_requests_total", route="/metrics", status="401") == 1
    api.get("/system/services/nosuch")
    api.get("/no/such/path")
    again = samples(api)
    assert value(again, "ondrop_http_requests_total", status="404", route="unmatched") == 1
    named = [s.labels["route"] for s in again if s.name == "ondrop_http_requests_total"]
    assert "/system/services/nosuch" not in named  # the template, not the name asked


def test_a_job_that_cannot_store_its_outputs_counts_an_error_of_that_provider(
    api: httpx.Client, tmp_path: Path
) -> None:
    with webdav_server(tmp_path / "dav") as dav:  # there at apply, gone when the job ends
        far = {"hostname": dav.url, "login": dav.user, "password": dav.password}
        body = {
            "name": "out",
            "script": 'echo x > "$TMP_OUTPUT_DIR/x"',
            "input": [{"path": "out/in"}],
            "output": [{"storage_provider": "webdav.gone", "path": "out/done"}],
            "storage_providers": {"webdav": {"gone": far}},
        }
        made = api.post("/system/services", json=body)
        assert made.status_code == 201, made.text
    assert api.put("/system/files/minio.default/out/in/a.txt", content=b"x").status_code < 300

    def with_a_storage_error() -> list[Sample] | None:
        got = samples(api)
        return got if value(got, "ondrop_storage_errors_total") else None

    found = wait_for(with_a_storage_error, timeout=30)
    assert value(found, "ondrop_storage_errors_total", provider="webdav.gone") >= 1
    # the input's provider did its part: it is not blamed
    assert value(found, "ondrop_storage_errors_total", provider="minio.default") == 0
    assert value(found, "ondrop_jobs_failed_total", service="out") == 0  # it waits


def test_a_method_http_does_not_name_is_counted_as_other() -> None:
    """(uvicorn refuses such a request itself; another server might pass it on.)"""
    telemetry = Telemetry()

    async def teapot(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    async def sent(message: Message) -> None:
        pass

    metered = Metered(teapot, telemetry)
    for method in ("BREW", "GET"):
        scope: Scope = {"type": "http", "method": method, "path": "/", "headers": []}
        asyncio.run(metered(scope, nothing, sent))
    found = parsed(telemetry.exposition().decode())
    assert value(found, "ondrop_http_requests_total", method="other", status="418") == 1
    assert value(found, "ondrop_http_requests_total", method="GET", route="unmatched") == 1
    assert value(found, "ondrop_http_requests_total", method="BREW") == 0


def test_only_a_provider_that_failed_an_attempt_is_counted() -> None:
    """A job that waits for something else (its runtime, a backend, a full disk) is no
    storage error, though it waits the same way."""
    telemetry = Telemetry()
    event = Event("minio.default", "in/a.txt", "v1", time=1.0, id=7)
    claim = Claim(Job("j", "s", 7, RUNNING, 1, 1.0), 1, event)
    waits = Outcome(FAILED, None, "podman is not installed", cause=Cause.UNAVAILABLE)
    telemetry.attempt_ended(claim, "faas", waits, None, None)
    blamed = Outcome(FAILED, 0, "storing outputs failed", cause=Cause.UNAVAILABLE, provider="s3.x")
    telemetry.attempt_ended(claim, "faas", blamed, None, 0.5)
    found = parsed(telemetry.exposition().decode())
    assert value(found, "ondrop_storage_errors_total") == 1
    assert value(found, "ondrop_storage_errors_total", provider="s3.x") == 1
    assert value(found, "ondrop_job_run_seconds_count") == 1  # the one that started


def test_prometheus_scrapes_with_the_documented_config(
    api: httpx.Client, base_url: str, tmp_path: Path
) -> None:
    """The scrape config of docs/metrics.md, its target, password file and interval
    changed to this test's, read by a real Prometheus."""
    binary = shutil.which("prometheus")
    if binary is None:
        unavailable("Prometheus is not installed (apt-get install prometheus)")
    assert binary is not None
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    config = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    (scrape,) = config["scrape_configs"]
    (tmp_path / "password").write_text(ADMIN.password)
    scrape["basic_auth"]["password_file"] = str(tmp_path / "password")
    scrape["static_configs"] = [{"targets": [base_url.removeprefix("http://")]}]
    scrape["scrape_interval"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert api.post("/system/services", json={"name": "ok", "script": "true"}).status_code == 201
    assert api.post("/run/ok", content=b"x").status_code == 200
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def started() -> float | None:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'sum(ondrop_jobs_started_total{service="ok"})'},
                )
            except httpx.TransportError:
                return None
            result = answer.json()["data"]["result"] if answer.status_code == 200 else []
            return float(result[0]["value"][1]) if result else None

        assert wait_for(started, timeout=60) == 1
    finally:
        server.terminate()
        server.wait(30)
