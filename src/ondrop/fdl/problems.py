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
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "is required"
            self.error(loc, message)


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
