"""ASGI middleware that counts every HTTP request answered, by route, method and status,
in the platform's telemetry (the /metrics series `ondrop_http_requests_total`).

A route is its template (`/system/services/{service_name}`), never the path asked for, so
that names and keys in paths add no series; a path no route has is `unmatched`, a method
HTTP does not name is `other`.
`answered` tells the status a request got, to this and to the execution log."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ondrop.telemetry import Telemetry

UNMATCHED = "unmatched"
# HTTP's methods and WebDAV's (an exposed service may speak it); any other is `other`, so
# that a client inventing methods adds no series.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
    | {"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}
)


async def answered(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, told: Callable[[int], None]
) -> None:
    """Run `app` on the request, then tell `told` the status it answered (500 when it
    began no answer), whatever happened."""
    status = 500

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    try:
        await app(scope, receive, sending)
    finally:
        told(status)


class Metered:
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def count(status: int) -> None:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", ""))
            self.telemetry.request(route, method if method in METHODS else "other", status)

        await answered(self.app, scope, receive, send, count)
