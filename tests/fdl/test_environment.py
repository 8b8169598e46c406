"""A service's environment is checked when it is applied: every job would fail at exec."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from ondrop.errors import DefinitionError
from ondrop.fdl import load_text, parse_service

TWO_MIB = 2 * 1024 * 1024


def oscar(env: Mapping[str, object]) -> str:
    return json.dumps({"functions": {"oscar": [{"c": {"name": "a", "script": "x y", **env}}]}})


def scar(env: Mapping[str, object]) -> str:
    container = {"image": "busybox", **env}
    return json.dumps({"functions": {"aws": [{"lambda": {"name": "a", "container": container}}]}})


def ondrop(env: Mapping[str, object]) -> str:
    return json.dumps({"services": [{"name": "a", "script": "x y", **env}]})


Shape = Callable[[Mapping[str, object]], str]
SHAPES: list[Shape] = [oscar, scar, ondrop]


def refused(text: str, tmp_path: Path) -> str:
    with pytest.raises(DefinitionError) as caught:
        load_text(text, "svc.yaml", tmp_path)
    return str(caught.value)


def refused_json(raw: dict[str, object]) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse_service({"name": "a", "script": "x y", **raw})
    return str(caught.value)


@pytest.fixture
def arg_max_of_two_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.sysconf

    def sysconf(name: str | int) -> int:
        return TWO_MIB if name == "SC_ARG_MAX" else real(name)

    monkeypatch.setattr(os, "sysconf", sysconf)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
@pytest.mark.parametrize("kind", ["variables", "secrets"])
@pytest.mark.parametrize("name", ["A=B", "", "1ST", "MY-VAR", "A B", "ÉTÉ"])
def test_a_variable_name_that_no_environment_can_hold_is_refused_in_every_shape(
    shape: Shape, kind: str, name: str, tmp_path: Path
) -> None:
    message = refused(shape({"environment": {kind: {"GOOD": "1", name: "v"}}}), tmp_path)
    assert message == (
        f"svc.yaml: service 'a': field 'environment.{kind}': variable {name!r}: not a valid "
        "name; expected letters, digits and '_', not starting with a digit (such as MY_VAR)"
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
def test_a_value_with_a_nul_byte_is_refused_and_a_secret_value_is_not_repeated(
    shape: Shape, tmp_path: Path
) -> None:
    env = {"environment": {"variables": {"PLAIN": "a\0b"}, "secrets": {"KEY": "s3cr3t\0"}}}
    message = refused(shape(env), tmp_path)
    assert (
        "svc.yaml: service 'a': field 'environment.variables': variable 'PLAIN': its value "
        "holds a NUL byte, which no environment can carry"
    ) in message
    assert "field 'environment.secrets': variable 'KEY': its value holds a NUL byte" in message
    assert "s3cr3t" not in message


def test_the_service_json_of_the_api_is_checked_the_same_way() -> None:
    message = refused_json({"environment": {"Variables": {"A=B": "1"}}})
    assert message.startswith(
        "service 'a': field 'environment.variables': variable 'A=B': not a valid name"
    )
    assert "its value holds a NUL byte" in refused_json({"environment": {"secrets": {"S": "\0"}}})


def test_one_variable_over_128_kib_is_refused_and_one_at_the_limit_is_not(tmp_path: Path) -> None:
    # "NAME=value" and its NUL must fit Linux's MAX_ARG_STRLEN, 131072 bytes.
    fits = "x" * (128 * 1024 - len("BIG=") - 1)
    (service,) = load_text(
        ondrop({"environment": {"variables": {"BIG": fits}}}), "s", tmp_path
    ).services
    assert service.environment.variables["BIG"] == fits
    message = refused(ondrop({"environment": {"variables": {"BIG": fits + "é"}}}), tmp_path)
    assert (
        "field 'environment.variables': variable 'BIG': BIG=value takes 131074 bytes; one "
        "variable may take at most 131072 (128 KiB)"
    ) in message


@pytest.mark.usefixtures("arg_max_of_two_mib")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
def test_ten_thousand_variables_over_half_of_arg_max_are_refused_naming_the_largest(
    shape: Shape, tmp_path: Path
) -> None:
    variables = {f"V{i:05d}": "x" * 100 for i in range(10_000)}
    variables["HUGE"] = "y" * 100_000
    message = refused(shape({"environment": {"variables": variables}}), tmp_path)
    assert message.startswith(
        "svc.yaml: service 'a': field 'environment': 10001 variables and secrets take "
        "1260014 bytes; at most 1048576 fit (half of this system's ARG_MAX, 2097152 bytes; "
        "the rest is left for what the platform adds); the largest: 'HUGE'"
    ), message


@pytest.mark.usefixtures("arg_max_of_two_mib")
def test_the_environment_limit_counts_secrets_too_and_accepts_what_fits(tmp_path: Path) -> None:
    # Each entry costs NAME=value, its NUL and a pointer: 4 + 1 + len(value) + 1 + 8.
    half = TWO_MIB // 2
    value = "z" * (100_000 - 14)
    names = [f"S{i:03d}" for i in range(10)]
    secrets = {n: value for n in names}  # 1,000,000 bytes
    rest = half - 1_000_000 - 14
    fits = {"environment": {"secrets": secrets, "variables": {"LAST": "w" * rest}}}
    (service,) = load_text(ondrop(fits), "svc.yaml", tmp_path).services
    assert len(service.environment.secrets) == 10
    over = {"environment": {"secrets": secrets, "variables": {"LAST": "w" * (rest + 1)}}}
    message = refused(ondrop(over), tmp_path)
    assert "11 variables and secrets take 1048577 bytes; at most 1048576 fit" in message
