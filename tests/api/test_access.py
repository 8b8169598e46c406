"""Access control on every endpoint, and no request at all that makes the API fail with
a 500: a table of endpoint x credentials, and schemathesis over the OpenAPI document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN

PUBLIC = {
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# Only there when the platform runs its object store; guarded by that store's own token.
WEBHOOKS = {("POST", "/events/seaweedfs")}
# A presigned URL's signature is its credentials: these get one that is wrong.
SIGNED = {"/presigned/{provider}/{key}"}


@pytest.fixture
def routes(anon: httpx.Client) -> list[tuple[str, str]]:
    paths = anon.get("/openapi.json").json()["paths"]
    found = [(method.upper(), path) for path, ops in paths.items() for method in ops]
    assert len(found) > 20
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{service}", "svc")
        .replace("{name}", "svc")
        .replace("{job}", "j")
        .replace("{provider}", "minio.default")
        .replace("{key}", "svc/in/x")
        .replace("{bucket}", "svc")
    )


@pytest.fixture
def tokens(api: httpx.Client) -> dict[str, str]:
    made = {}
    for name in ("svc", "other"):
        made[name] = api.post(
            "/system/services",
            json={"name": name, "script": "true", "input": [{"path": f"{name}/in"}]},
        ).json()["token"]
    return made


def test_every_protected_endpoint_refuses_missing_and_wrong_credentials(
    anon: httpx.Client, routes: list[tuple[str, str]], tokens: dict[str, str]
) -> None:
    checked = 0
    for method, path in routes:
        if (method, path) in PUBLIC | WEBHOOKS:
            continue
        url = concrete(path)
        if path in SIGNED:
            url += "?expires=4102444800&signature=" + "0" * 64
        for label, headers in [
            ("none", {}),
            ("wrong basic", {"Authorization": "Basic YWRtaW46d3Jvbmc="}),
            ("other service's token", {"Authorization": f"Bearer {tokens['other']}"}),
        ]:
            # A service's own token opens its jobs, runs and exposed server; no more.
            own = path.startswith(("/job", "/run")) or path.endswith("/auth")
            if label == "other service's token" and not own:
                headers = {"Authorization": f"Bearer {tokens['svc']}"}  # a token is no admin
            response = anon.request(method, url, headers=headers, content=b"{}")
            assert response.status_code in (401, 403), (method, path, label, response.text)
            checked += 1
    assert checked >= 60


def test_a_services_token_opens_only_its_own_job_and_run(
    anon: httpx.Client, tokens: dict[str, str]
) -> None:
    own = {"Authorization": f"Bearer {tokens['svc']}"}
    assert anon.post("/job/svc", content=b"{}", headers=own).status_code == 201
    assert anon.post("/job/other", content=b"{}", headers=own).status_code == 401
    assert anon.get("/system/services/svc", headers=own).status_code == 401


def test_a_service_that_does_not_exist_is_404_whoever_asks(
    anon: httpx.Client, tokens: dict[str, str]
) -> None:
    """As OSCAR's /job and /run: the service is looked up before the credentials."""
    for headers in ({}, {"Authorization": f"Bearer {tokens['svc']}"}):
        for path in ("/job/nosuch", "/run/nosuch"):
            response = anon.post(path, content=b"{}", headers=headers)
            assert response.status_code == 404, (path, headers, response.text)
            assert "no service named 'nosuch'" in response.text


def test_the_webhook_refuses_a_missing_or_wrong_token_when_there_is_one(
    anon: httpx.Client,
) -> None:
    assert anon.post("/events/seaweedfs", json={}).status_code == 404  # no store to hear from


def test_no_generated_request_makes_a_server_error(base_url: str) -> None:
    """schemathesis generates requests for every operation of the OpenAPI document, valid
    and not; none may make the API fail with a 5xx."""
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--auth",
            f"{ADMIN.user}:{ADMIN.password}",
            "--max-examples",
            "15",
            "--request-timeout",
            "30",
            "--seed",
            "1",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
