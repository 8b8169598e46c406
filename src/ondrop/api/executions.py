"""The execution log of OSCAR's `GET /system/logs`: one entry per invocation (`POST` to
/job or /run) this control plane answered, as OSCAR's execution logger writes them:
when, the status, how long, from where, and who (the admin, or a service's token).

The last ENTRIES are kept in memory, per control plane: the platform's log
(`ondrop up`'s standard error) has the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ondrop.api.metered import answered

ENTRIES = 10_000
PREFIX = "[GIN-EXECUTIONS-LOGGER]"  # OSCAR's marker of these lines, kept for its parsers


class Executions:
    def __init__(self, keep: int = ENTRIES) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(
        self, status: int, seconds: float, client: str, method: str, path: str, user: str
    ) -> None:
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        )
        latency = f"{seconds * 1000:.3f}ms"
        entry = {
            "timestamp": stamp,
            "status": status,
            "latency": latency,
            "client_ip": client,
            "method": method,
            "path": path,
            "user": user,
            "raw": f"{PREFIX} {stamp} | {status} | {latency} | {client} | {method} {path} | {user}",
        }
        with self._lock:
            self._entries.append(entry)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)


class ExecutionLogger:
    """ASGI middleware: records every POST to /job/... and /run/... once answered."""

    def __init__(self, app: ASGIApp, executions: Executions) -> None:
        self.app = app
        self.executions = executions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not path.startswith(("/job/", "/run/"))
        ):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()

        def record(status: int) -> None:
            client = scope.get("client") or ("", 0)
            self.executions.add(
                status, time.monotonic() - started, str(client[0]), "POST", path, _who(scope)
            )

        await answered(self.app, scope, receive, send, record)


def _who(scope: Scope) -> str:
    """Who asked, by the kind of credentials given (never checked here, never shown)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            if scheme.lower() == b"bearer" and given.strip().count(b".") == 2:
                return "oidc user"  # a JWT; a service's token is hex
            return {b"basic": "admin", b"bearer": "service token"}.get(scheme.lower(), "")
    return ""
