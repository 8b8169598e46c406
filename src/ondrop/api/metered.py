"""ASGI middleware that counts every HTTP request answered, by route, method and status,
in the platform's telemetry (the /metrics series `ondrop_http_requests_total`).

A route is its template (`/system/services/{service_name}`), never the path asked for, so
that names and keys in paths add no series; a path no route has is `unmatched`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ondrop.telemetry import Telemetry

UNMATCHED = "unmatched"


class Metered:
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless an answer is begun

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.telemetry.request(route, str(scope.get("method", "")), status)
