"""POST /system/services and /system/apply refuse an environment no job could start with."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"variables": {"A=B": "1"}}, "field 'environment.variables': variable 'A=B': not a valid"),
        ({"Variables": {"": "1"}}, "field 'environment.variables': variable '': not a valid"),
        (
            {"secrets": {"KEY": "a\u0000b"}},
            "field 'environment.secrets': variable 'KEY': its value holds a NUL byte",
        ),
        (
            {"variables": {"BIG": "x" * 200_000}},
            "field 'environment.variables': variable 'BIG': BIG=value takes 200005 bytes",
        ),
    ],
)
def test_a_service_whose_environment_cannot_be_exec_d_gets_422_naming_the_variable(
    api: httpx.Client, environment: dict[str, object], named: str
) -> None:
    body = {"name": "envy", "script": "true", "environment": environment}
    response = api.post("/system/services", json=body)
    assert response.status_code == 422, response.text
    assert f"service 'envy': {named}" in response.json()["detail"]
    applied = api.post("/system/apply", json={"services": [body]})
    assert applied.status_code == 422, applied.text
    assert named in applied.json()["detail"]
    assert api.get("/system/services").json() == []
