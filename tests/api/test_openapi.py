"""The OpenAPI document says what the API answers, so that clients generated from it work:
every status each operation can answer, one error shape for all of them, the headers, the
credentials schemes, the raw bodies, and in `Allow` the methods each path takes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN

ERROR = {"$ref": "#/components/schemas/Error"}
# schemathesis's checks of each answer against the document, and of 405s and OPTIONS.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "allow_header_conformance",
]


@pytest.fixture
def document(anon: httpx.Client) -> dict[str, Any]:
    found: dict[str, Any] = anon.get("/openapi.json").json()
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [
        (method.upper(), path, operation)
        for path, ops in document["paths"].items()
        for method, operation in ops.items()
    ]
    assert len(found) > 20
    return found


@pytest.mark.parametrize("credentials", ["admin", "none"])
def test_every_answer_to_generated_requests_is_one_the_openapi_document_lists(
    base_url: str, document: dict[str, Any], tmp_path: Path, credentials: str
) -> None:
    """schemathesis generates requests for every operation, valid and not, with unlisted
    methods and OPTIONS too, and checks each answer's status, content type, headers and
    body against the document, and `Allow` against the methods it lists for the path."""
    cli = Path(sys.executable).parent / "schemathesis"
    auth = ["--auth", f"{ADMIN.user}:{ADMIN.password}"] if credentials == "admin" else []
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            *auth,
            "--max-examples",
            "20",
            "--request-timeout",
            "20",  # each request's deadline; the run takes seconds
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {len(operations(document))}\n" in result.stdout, result.stdout[-3000:]
    counted = re.search(r"\n +(\d+) generated, (\d+) passed\n", result.stdout)
    assert counted is not None, result.stdout[-3000:]  # else: "... found N unique failures"
    assert counted[1] == counted[2] and int(counted[1]) > 300, counted[0]


def test_every_error_answer_in_the_document_is_the_one_error_shape(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["required"] == ["detail"]
    assert schemas["Error"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in schemas  # FastAPI's shape, which no answer has
    checked = 0
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or (path, status) == ("/health", "503"):
                continue  # /health answers text: `Degraded: ...`
            assert answer["content"] == {"application/json": {"schema": ERROR}}, (
                method,
                path,
                status,
            )
            assert answer["description"], (method, path, status)
            checked += 1
        assert "500" in operation["responses"], (method, path)
    assert checked > 100


def test_the_document_lists_the_headers_of_401_503_and_of_what_succeeds(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        answers = operation["responses"]
        if "401" in answers:
            assert answers["401"]["headers"]["WWW-Authenticate"]["required"], (method, path)
        if "503" in answers and path != "/health":
            retry = answers["503"]["headers"]["Retry-After"]
            assert retry["required"] and retry["schema"]["type"] == "integer", (method, path)
    paths = document["paths"]
    assert "Location" in paths["/job/{service}"]["post"]["responses"]["201"]["headers"]
    ran = paths["/run/{service}"]["post"]["responses"]["200"]
    assert {"X-Job-Id", "X-Ondrop-Output"} <= set(ran["headers"])
    assert set(ran["content"]) == {"text/plain", "application/octet-stream"}
    download = paths["/system/files/{provider}/{key}"]["get"]["responses"]["200"]
    assert {"ETag", "Content-Disposition"} <= set(download["headers"])
    assert set(download["content"]) == {"application/octet-stream"}


def test_each_operation_lists_the_statuses_of_its_own_faults(document: dict[str, Any]) -> None:
    """Statuses no generated request meets on a healthy platform: a full disk, a failed
    store, a body over the limit, a token on another service's objects."""
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[int]:
        return {int(s) for s in paths[path][method]["responses"]}

    assert {201, 400, 401, 404, 413, 502, 503, 507} <= statuses(
        "/system/files/{provider}/{key}", "put"
    )
    assert {200, 201, 400, 401, 403, 404, 413, 503, 507} <= statuses("/job/{service}", "post")
    assert {200, 400, 401, 404, 413, 500, 503, 507} <= statuses("/run/{service}", "post")
    assert {201, 401, 409, 422, 503, 507} <= statuses("/system/services", "post")
    assert {204, 401, 404, 409, 422} <= statuses("/system/services", "put")
    assert {204, 401, 404, 409, 503} <= statuses("/system/logs/{service}/{job}", "delete")
    assert 422 in statuses("/system/logs/{service}", "get")  # `limit` has bounds
    assert 422 not in statuses("/system/services/{name}", "get")  # nothing to refuse


def test_the_document_declares_who_may_call_each_operation(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert (schemes["admin"]["type"], schemes["admin"]["scheme"]) == ("http", "basic")
    assert (schemes["serviceToken"]["type"], schemes["serviceToken"]["scheme"]) == (
        "http",
        "bearer",
    )
    for method, path, operation in operations(document):
        if path == "/health":
            assert "security" not in operation
        elif path.startswith(("/job/", "/run/")) or path == "/system/services/{service}/auth":
            assert operation["security"] == [{"serviceToken": []}, {"admin": []}, {"oidc": []}]
        elif (path.startswith(USERS) or path == "/system/quotas/user") and (
            method.lower(),
            path,
        ) != ("put", "/system/config"):
            assert operation["security"] == [{"admin": []}, {"oidc": []}], (method, path)
        elif path.startswith("/system/"):
            assert operation["security"] == [{"admin": []}], (method, path)
    assert (schemes["oidc"]["scheme"], schemes["oidc"]["bearerFormat"]) == ("bearer", "JWT")


# What a signed-in user (an OIDC token) may call, besides /job and /run: the services they
# may use, their jobs, and what the platform is.
USERS = (
    "/system/services",
    "/system/apply",
    "/system/logs/",
    "/system/jobs/",
    "/system/info",
    "/system/config",
    "/system/buckets",
    "/system/metrics",
    "/system/history",
)  # and their own quota (/system/quotas/user; another's is the admin's)


def test_operations_that_read_a_raw_body_document_it(document: dict[str, Any]) -> None:
    paths = document["paths"]
    upload = paths["/system/files/{provider}/{key}"]["put"]["requestBody"]["content"]
    assert upload["application/octet-stream"]["schema"]["format"] == "binary"
    for path in ("/job/{service}", "/run/{service}"):
        operation = paths[path]["post"]
        assert set(operation["requestBody"]["content"]) == {
            "application/octet-stream",
            "application/json",
            "text/plain",
        }
        assert "Content-Disposition" in [p["name"] for p in operation["parameters"]]


def test_options_answers_the_methods_the_document_lists_for_the_path(
    anon: httpx.Client, document: dict[str, Any]
) -> None:
    for path, concrete in [
        ("/system/services", "/system/services"),
        ("/system/services/{name}", "/system/services/x"),
        ("/system/logs/{service}/{job}", "/system/logs/x/y"),
        ("/system/jobs/{service}/retry", "/system/jobs/x/retry"),
        ("/system/jobs/{service}/{job}", "/system/jobs/x/y"),
        ("/system/files/{provider}/{key}", "/system/files/p/a/b.txt"),
    ]:
        response = anon.options(concrete)
        listed = {m.upper() for m in document["paths"][path]} | {"OPTIONS"}
        assert response.status_code == 204, (concrete, response.text)
        assert set(response.headers["allow"].split(", ")) == listed, concrete


def test_a_method_the_path_does_not_take_is_405_naming_those_it_takes(
    api: httpx.Client,
) -> None:
    cases = {
        ("PATCH", "/system/services"): "GET, OPTIONS, POST, PUT",
        ("POST", "/system/services/x"): "DELETE, GET, OPTIONS",
        ("PUT", "/system/logs/x"): "DELETE, GET, OPTIONS",
        ("PATCH", "/system/files/p/a/b.txt"): "DELETE, GET, OPTIONS, PUT",
        # A fixed segment wins over a parameter, as in OpenAPI: this is .../retry.
        ("GET", "/system/jobs/x/retry"): "OPTIONS, POST",
    }
    for (method, path), allow in cases.items():
        response = api.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allow, (method, path)
        assert method in response.json()["detail"], (method, path)
    assert api.get("/system/services").status_code == 200  # a method it takes passes
