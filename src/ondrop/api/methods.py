"""Which methods a path takes: those its path template lists, as the OpenAPI document
says, choosing among templates that match the way OpenAPI does (a fixed segment before a
parameter: `/system/jobs/s/retry` is `/system/jobs/{service}/retry`, not `.../{job}`).
`OPTIONS` answers them in `Allow`; any other method is `405` with the same `Allow`.
Starlette's own 405 names only the methods of the first route that matches the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

PARAMETER = re.compile(r"\{([^}:]+)(:[^}]*)?\}")


@dataclass(frozen=True)
class Template:
    path: str
    pattern: re.Pattern[str]
    methods: tuple[str, ...]

    def rank(self) -> tuple[int, ...]:
        """Sorts the most specific template first: per segment, fixed < parameter <
        parameter taking the rest of the path."""
        return tuple(
            2 if (m := PARAMETER.fullmatch(part)) and m.group(2) else 1 if m else 0
            for part in self.path.split("/")
        )


def flat(routes: Iterable[BaseRoute]) -> Iterator[Any]:
    """Every route, those of included routers too (FastAPI from 0.16x keeps an included
    router as one entry of `app.routes`; earlier versions copy its routes there)."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return iter(routes) if expand is None else iter(expand(list(routes)))


def templates(routes: Iterable[BaseRoute]) -> list[Template]:
    """One template per path, with the methods of all its routes, most specific first."""
    methods: dict[str, set[str]] = {}
    patterns: dict[str, re.Pattern[str]] = {}
    for route in flat(routes):
        path, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
        if isinstance(path, str) and isinstance(pattern, re.Pattern) and route.methods:
            methods.setdefault(path, set()).update(route.methods)
            patterns[path] = pattern
    found = [
        Template(path, patterns[path], tuple(sorted(m | {"OPTIONS"})))
        for path, m in methods.items()
    ]
    return sorted(found, key=Template.rank)


class AllowedMethods:
    """ASGI middleware: OPTIONS and methods a path does not take, answered before routing."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the app's list: read once routes are all included
        self.known: list[Template] | None = None

    def allowed(self, path: str) -> Template | None:
        if self.known is None:
            self.known = templates(self.routes)
        return next((t for t in self.known if t.pattern.match(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        template = self.allowed(path)
        method = scope["method"]
        if template is None or (method in template.methods and method != "OPTIONS"):
            await self.app(scope, receive, send)
            return
        allow = ", ".join(template.methods)
        if method == "OPTIONS":
            status, body = 204, b""
            headers = [(b"allow", allow.encode())]
        else:
            status = 405
            path = PARAMETER.sub(r"{\1}", template.path)  # as the OpenAPI document names it
            detail = f"{path} takes {allow}, not {method}"
            body = json.dumps({"detail": detail}).encode()
            headers = [
                (b"allow", allow.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
