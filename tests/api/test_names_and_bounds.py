"""Names and numbers from outside: any UTF-8 name travels through upload, listing,
download and /run replies with a Content-Disposition no name can inject into; names
with control characters and query numbers out of range are refused, never a 500."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.api.test_api import create, wait_job

NAMES = ["😀.txt", 'a"; filename=evil.exe', "naïve ünïcode \u2013 名前.bin", "100%25 sure.txt"]
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
PARAM = re.compile(rf'\s*;\s*({TOKEN})=("(?:[^"\\]|\\.)*"|{TOKEN})\s*')


def parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    """(type, parameters) of a Content-Disposition, read strictly by RFC 6266's grammar:
    anything left over, or a parameter given twice, fails the test."""
    kind = re.match(TOKEN, value)
    assert kind, value
    params: dict[str, str] = {}
    pos = kind.end()
    while pos < len(value):
        match = PARAM.match(value, pos)
        assert match, f"cannot parse {value[pos:]!r} in {value!r}"
        name, raw = match.group(1).lower(), match.group(2)
        assert name not in params, f"{name} given twice in {value!r}"
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = match.end()
    return kind.group(0), params


def filename_of(value: str) -> str:
    """The name a client that knows RFC 5987 takes from a Content-Disposition; checks
    that nothing else is in the header and that the ASCII fallback is safe."""
    kind, params = parse_disposition(value)
    assert kind == "attachment"
    assert set(params) <= {"filename", "filename*"}, params
    fallback = params["filename"]
    assert all(" " <= c <= "~" and c not in '"\\;%' for c in fallback), fallback
    if "filename*" not in params:
        return fallback
    charset, _lang, encoded = params["filename*"].split("'", 2)
    assert charset.lower() == "utf-8"
    return unquote(encoded, encoding="utf-8", errors="strict")


@pytest.mark.parametrize("name", NAMES)
def test_any_utf8_name_is_uploaded_listed_and_downloaded_under_its_own_name(
    api: httpx.Client, name: str
) -> None:
    key = f"names/{name}"
    put = api.put(f"/system/files/minio.default/{quote(key)}", content=b"hello")
    assert put.status_code == 201, put.text
    assert put.json()["key"] == key
    listing = api.get("/system/files/minio.default", params={"prefix": "names"}).json()
    assert [o["key"] for o in listing["objects"]] == [key]
    got = api.get(f"/system/files/minio.default/{quote(key)}")
    assert got.status_code == 200, got.text
    assert got.content == b"hello"
    assert filename_of(got.headers["content-disposition"]) == name


@pytest.mark.parametrize("name", NAMES)
def test_a_run_reply_of_any_utf8_output_name_carries_that_name(
    api: httpx.Client, name: str
) -> None:
    create(api, "named", output=[], script=f'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\'{name}\'')
    response = api.post(
        "/run/named",
        content=b"data",
        headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-ondrop-output"] == "file"
    assert response.content == b"data"
    assert filename_of(response.headers["content-disposition"]) == name


def test_a_run_reply_of_an_output_named_with_a_newline_is_answered_safely(
    api: httpx.Client,
) -> None:
    create(api, "newline", output=[], script="printf x > \"$TMP_OUTPUT_DIR/$(printf 'a\\nb')\"")
    response = api.post(
        "/run/newline", content=b"{}", headers={"Accept": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert filename_of(response.headers["content-disposition"]) == "a\nb"


@pytest.mark.parametrize("name", NAMES)
def test_an_invocation_names_its_input_with_filename_star(api: httpx.Client, name: str) -> None:
    create(api)
    response = api.post(
        "/job/copy",
        content=b"x",
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": 'attachment; filename="fallback.bin"; '
            f"filename*=UTF-8''{quote(name)}",
        },
    )
    assert response.status_code == 201, response.text
    assert wait_job(api, "copy", response.json()["job_id"])["input"] == name


@pytest.mark.parametrize("char", ["\x01", "\x1b", "\x7f", "\x85", "\x9b"])
def test_an_upload_whose_name_has_a_control_character_is_refused_with_400_naming_it(
    api: httpx.Client, char: str
) -> None:
    response = api.put(f"/system/files/minio.default/{quote(f'names/bad{char}.txt')}", content=b"x")
    assert response.status_code == 400, response.text
    assert f"control character U+{ord(char):04X}" in response.json()["detail"]
    assert (
        api.get("/system/files/minio.default", params={"prefix": "names"}).json()["objects"] == []
    )


def numeric_query_parameters(api: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) for every integer or number query parameter the API has."""
    found = []
    for path, operations in api.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                if param["in"] == "query" and param["schema"].get("type") in {"integer", "number"}:
                    found.append((method, path, param))
    return found


def test_every_numeric_query_parameter_shows_its_bounds(api: httpx.Client) -> None:
    found = numeric_query_parameters(api)
    assert found, "the API has no numeric query parameter: this test looks at nothing"
    for method, path, param in found:
        assert "minimum" in param["schema"] and "maximum" in param["schema"], (method, path, param)


@pytest.mark.parametrize("value", ["9223372036854775808", "-9223372036854775809", "-1"])
def test_an_out_of_range_query_number_is_refused_with_422_on_every_endpoint(
    api: httpx.Client, value: str
) -> None:
    create(api)
    found = numeric_query_parameters(api)
    assert found
    for method, path, param in found:
        url = re.sub(r"\{[^}]+\}", "copy", path)
        response = api.request(method.upper(), url, params={param["name"]: value})
        assert response.status_code == 422, (method, url, response.status_code, response.text)
        assert param["name"] in response.json()["detail"]
