"""What a definition got wrong or what ondrop will ignore, before it is put in words."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ondrop.errors import DefinitionError


@dataclass(frozen=True)
class Problem:
    field: str  # dotted path inside the service ("input.0.path"), or '' for the whole entry
    message: str


@dataclass
class Report:
    """Errors and warnings found while reading one service."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, field: str, message: str) -> None:
        self.errors.append(Problem(field, message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(Problem(field, message))

    def unknown(self, field: str, known: Iterable[str], prefix: str = "") -> None:
        name = field.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.error(prefix + field, f"unknown field{hint}")

    def add_validation(self, exc: ValidationError) -> None:
        for err in exc.errors():
            loc = ".".join(str(part) for part in err["loc"])
            self.error(loc, in_words(err["type"], err.get("ctx") or {}, err["msg"], err["input"]))


# pydantic's error types, in ondrop's words ({...}: the error's context); a type not here
# keeps pydantic's own message.
WORDS = {
    "extra_forbidden": "unknown field",
    "missing": "is required",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "string_type": "must be text",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (NAME: value, ...)",
    "model_type": "must be a mapping (NAME: value, ...)",
    "model_attributes_type": "must be a mapping (NAME: value, ...)",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
}
SHOWN_INPUT = 60  # characters of a wrong value quoted back


def in_words(kind: str, ctx: dict[str, Any], message: str, given: Any) -> str:
    """One validation error as ondrop says it, with the value given where it helps."""
    words = WORDS.get(kind)
    if words is None:
        return message.removeprefix("Value error, ")
    try:
        text = words.format(**ctx)
    except (KeyError, IndexError):
        text = words.split(" {", 1)[0]
    if kind in ("extra_forbidden", "missing"):
        return text
    shown = repr(given)
    if len(shown) > SHOWN_INPUT:
        shown = shown[: SHOWN_INPUT - 3] + "..."
    return f"{text}, not {shown}"


def is_unset(value: Any) -> bool:
    """True for values that ask for nothing: None, false, 0, '' and containers of those."""
    if isinstance(value, dict):
        return all(is_unset(v) for v in value.values())
    if isinstance(value, list):
        return all(is_unset(v) for v in value)
    return value in (None, False, 0, "")


def describe(where: str, service: str | None, problem: Problem) -> str:
    parts = [where] if where else []
    if service:
        parts.append(f"service {service!r}")
    if problem.field:
        parts.append(f"field {problem.field!r}")
    return ": ".join([*parts, problem.message])


def raise_errors(where: str, service: str | None, report: Report) -> None:
    if report.errors:
        lines = [describe(where, service, p) for p in report.errors]
        raise DefinitionError("\n".join(lines))
