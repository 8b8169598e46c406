"""/system/services/{name}/exposed/...: the proxy to an exposed service's replicas (HTTP,
streamed both ways, and websockets), and OSCAR's start, stop and restart of them.

A request goes to a replica that is up (the one with fewest requests on it), over a new
connection made in the replica's own network (exposed.py). The server sees the path
below /exposed (with `rewrite_target`, the whole path) as the caller wrote it, the
caller's headers less the hop-by-hop ones and less any Authorization that opens
something of the platform's (the admin's, a service's token, a user's OIDC token: with
`set_auth`, always), and X-Forwarded-For/-Host/-Proto/-Prefix. No replica up: 503 with
Retry-After; a replica that does not answer, or not within ANSWER_WITHIN, or not in
HTTP: 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import h11
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ondrop.api.auth import lets_in, require_exposed
from ondrop.api.deps import ExposedAccess, PlatformDep, ServiceChanger
from ondrop.api.openapi import errors
from ondrop.errors import BadGatewayError, NotFoundError
from ondrop.exposed import Replica, base_path
from ondrop.fdl.models import Service
from ondrop.platform import Platform

router = APIRouter(tags=["services"], responses=errors(401, 403, 500))

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
CONNECT_TIMEOUT = 10.0
ANSWER_WITHIN = 300.0  # seconds a replica has to start its answer, and between its parts
MESSAGE_MAX = 16 * 1024 * 1024  # bytes of one websocket message from a replica
CHUNK = 65536
# Headers of one connection only (RFC 9110 7.6.1), and the ones the proxy sets itself.
HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
WEBSOCKET_OWN = {  # what the websocket client sets itself
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}


def _target(platform: Platform, connection: HTTPConnection, name: str) -> tuple[Service, bool]:
    """The exposed service `name`, the caller let in as its `set_auth` asks; and whether
    the caller's Authorization is kept from the server (it opens something of the
    platform's, which a server of the user's must never see)."""
    platform.services.catch_up()
    service = platform.services.find(name)
    if service is None:
        raise NotFoundError(f"no service named {name!r}")
    if service.expose is None:
        raise NotFoundError(f"service {name!r} is not exposed (it has no `expose`)")
    app = connection.app
    if service.expose.set_auth:
        require_exposed(connection, app.state.admin, app.state.signin, service)
        return service, True
    ours = lets_in(connection, app.state.admin, app.state.signin, platform.services.all())
    return service, ours


def _path(service: Service, connection: HTTPConnection) -> str:
    """The request's target for the server: the path as the caller wrote it (%2F stays
    %2F), below the base path unless `rewrite_target`, with its query."""
    assert service.expose is not None
    raw = connection.scope.get("raw_path") or quote(connection.url.path).encode()
    target = raw.decode("latin-1")
    if not service.expose.rewrite_target:
        base = base_path(service.name)
        # (a base path written in %-escapes is one no client writes: the decoded one)
        below = target[len(base) :] if target.startswith(base) else connection.url.path[len(base) :]
        target = below if below.startswith("/") else "/" + below
    query = connection.scope.get("query_string", b"").decode("latin-1")
    return target + ("?" + query if query else "")


def _headers(
    service: Service, connection: HTTPConnection, drop: set[bytes]
) -> list[tuple[bytes, bytes]]:
    """The caller's headers for the server (less `drop`), and where the request came
    from."""
    skip = HOP | drop
    headers = [(k, v) for k, v in connection.headers.raw if k.lower() not in skip]
    client = connection.client.host if connection.client else ""
    before = connection.headers.get("x-forwarded-for")
    headers = [(k, v) for k, v in headers if not k.lower().startswith(b"x-forwarded-")]
    # Behind a proxy uvicorn trusts, the client is the one that proxy named already.
    last = before.rpartition(",")[2].strip() if before else ""
    forwarded = f"{before}, {client}" if before and client and client != last else before or client
    headers += [
        (b"x-forwarded-for", forwarded.encode("latin-1")),
        (b"x-forwarded-host", connection.headers.get("host", "").encode("latin-1")),
        (b"x-forwarded-proto", connection.url.scheme.encode("latin-1")),
        (b"x-forwarded-prefix", base_path(service.name).encode("latin-1")),
    ]
    return headers


async def _connect(
    platform: Platform, replica: Replica
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the replica's server, made in its network."""
    return await asyncio.open_connection(sock=await _socket(platform, replica))


async def _socket(platform: Platform, replica: Replica) -> socket.socket:
    """A socket connected to the replica's server, made in its network."""
    loop = asyncio.get_running_loop()
    try:
        sock = await run_in_threadpool(platform.exposed.socket, replica)
    except OSError as exc:
        raise BadGatewayError(f"cannot reach replica {replica.id}: {exc}") from None
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            loop.sock_connect(sock, ("127.0.0.1", replica.port)), CONNECT_TIMEOUT
        )
        return sock
    except (OSError, TimeoutError) as exc:
        sock.close()
        why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise BadGatewayError(
            f"replica {replica.id} did not take the connection on its port {replica.port} "
            f"({why}): is api_port the port its server listens on?"
        ) from None


# The service's own API, not the platform's: left out of the OpenAPI document (docs/api.md
# describes it).
@router.api_route("/system/services/{name}/exposed", methods=METHODS, include_in_schema=False)
@router.api_route(
    "/system/services/{name}/exposed/{path:path}", methods=METHODS, include_in_schema=False
)
async def proxy(request: Request, name: str, path: str = "") -> Response:
    """An exposed service's own HTTP API: passed to one of its replicas, streamed both
    ways. With `set_auth`, the service's token is needed (basic: the service's name and
    its token, or a bearer token)."""
    platform: Platform = request.app.state.platform  # _target catches up with the store
    service, ours = await run_in_threadpool(_target, platform, request, name)
    replica = platform.exposed.pick(name)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            platform.exposed.release(replica)

    try:
        reader, writer = await _connect(platform, replica)
    except BaseException:
        release()
        raise
    try:
        connection = h11.Connection(h11.CLIENT)
        drop = {b"authorization"} if ours else set()
        headers = [(b"host", b"localhost"), *_headers(service, request, drop)]
        length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if length is not None:
            headers.append((b"content-length", length.encode("latin-1")))
        elif chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        headers.append((b"connection", b"close"))
        writer.write(
            connection.send(
                h11.Request(method=request.method, target=_path(service, request), headers=headers)
            )
            or b""
        )
        if length is not None or chunked:
            async for chunk in request.stream():
                if chunk:
                    writer.write(connection.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()

        async def event() -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
            while True:
                got = connection.next_event()
                if got is not h11.NEED_DATA:
                    return got
                connection.receive_data(await reader.read(CHUNK))

        answer = await asyncio.wait_for(event(), ANSWER_WITHIN)
        while isinstance(answer, h11.InformationalResponse):
            answer = await asyncio.wait_for(event(), ANSWER_WITHIN)
        if not isinstance(answer, h11.Response):
            raise BadGatewayError(f"replica {replica.id} closed the connection without answering")
        if not 200 <= answer.status_code <= 599:
            raise BadGatewayError(
                f"replica {replica.id} answered with status {answer.status_code}, not one of HTTP's"
            )
    except (OSError, h11.ProtocolError, TimeoutError) as exc:
        writer.close()
        release()
        why = f"none within {ANSWER_WITHIN:g} s" if isinstance(exc, TimeoutError) else exc
        raise BadGatewayError(f"replica {replica.id} gave no valid answer ({why})") from None
    except BaseException:
        writer.close()
        release()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                got = await asyncio.wait_for(event(), ANSWER_WITHIN)
                if isinstance(got, h11.Data):
                    yield bytes(got.data)
                elif isinstance(got, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return
        except (OSError, h11.ProtocolError, TimeoutError):
            return  # the server went away (or went quiet) mid-answer: cut short

    def closed() -> None:
        writer.close()
        release()

    headers = [(k, v) for k, v in answer.headers if k.lower() not in HOP - {b"content-length"}]
    if any(k.lower() == b"transfer-encoding" for k, _ in answer.headers):
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]  # re-framed
    return Relayed(body(), answer.status_code, headers, closed)


class Relayed(StreamingResponse):
    """A replica's answer, streamed; `closed` runs once it is over, however it ended (the
    client gone, the answer refused by the server before its first byte)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        closed: Callable[[], None],
    ) -> None:
        super().__init__(content, status_code=status_code)
        self.raw_headers = headers
        self.closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.closed()


@router.websocket("/system/services/{name}/exposed")
@router.websocket("/system/services/{name}/exposed/{path:path}")
async def proxy_websocket(websocket: WebSocket, name: str, path: str = "") -> None:
    """Websockets to an exposed service, passed to one of its replicas message by message."""
    platform: Platform = websocket.app.state.platform
    try:
        service, ours = await run_in_threadpool(_target, platform, websocket, name)
        replica = platform.exposed.pick(name)
    except Exception as exc:  # refused before the handshake: the client sees a 403
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    try:
        sock = await _socket(platform, replica)
    except BadGatewayError as exc:
        platform.exposed.release(replica)
        await websocket.close(code=1011, reason=str(exc)[:120])
        return
    protocols = [
        p.strip()
        for p in websocket.headers.get("sec-websocket-protocol", "").split(",")
        if p.strip()
    ]
    drop = WEBSOCKET_OWN | {b"origin"} | ({b"authorization"} if ours else set())
    headers = _headers(service, websocket, drop)
    try:
        async with ws_connect(
            f"ws://localhost:{replica.port}{_path(service, websocket)}",
            sock=sock,
            additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            subprotocols=protocols or None,  # type: ignore[arg-type]
            origin=websocket.headers.get("origin"),  # type: ignore[arg-type]
            open_timeout=CONNECT_TIMEOUT,
            max_size=MESSAGE_MAX,
        ) as upstream:
            await websocket.accept(subprotocol=upstream.subprotocol)
            await _pump(websocket, upstream)
    except (InvalidStatus, InvalidHandshake, OSError, TimeoutError) as exc:
        sock.close()
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1011, reason=f"the replica refused: {exc}"[:120])
    finally:
        platform.exposed.release(replica)


async def _pump(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Messages both ways until either side closes; the other is closed with its code."""

    async def down() -> None:
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    await websocket.send_text(message)
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=code if code != 1005 else 1000)

    async def up() -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(message.get("code", 1000))
                    return
                if message.get("bytes") is not None:
                    await upstream.send(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send(message["text"])
        except (WebSocketDisconnect, ConnectionClosed):
            await upstream.close()

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@router.get(
    "/system/services/{service}/auth",
    dependencies=[ExposedAccess],
    status_code=200,
    response_class=Response,
    responses=errors(404, why={404: "no service of that name"}),
)
def service_auth(service: str) -> Response:
    """OSCAR's: `200` when the credentials may use the service (its token, as a bearer
    token or as basic credentials with its name; the admin; a user it is shared with),
    else `401`/`403`: what a proxy in front of a service asks (`auth_type: forward`)."""
    return Response(status_code=200)


LIFECYCLE = errors(
    400, 404, why={400: "the service is not exposed", 404: "no service of that name"}
)


@router.post("/system/services/{service}/stop", dependencies=[ServiceChanger], responses=LIFECYCLE)
def stop(service: str, platform: PlatformDep) -> dict[str, Any]:
    """OSCAR's: keep no replica of the exposed service (its definition stays) until start,
    across restarts too; its deployment's state. A service that is not exposed: 400."""
    platform.exposed.stop(service)
    return {"service_name": service, **platform.exposed.status(service)}


@router.post("/system/services/{service}/start", dependencies=[ServiceChanger], responses=LIFECYCLE)
def start(service: str, platform: PlatformDep) -> dict[str, Any]:
    """OSCAR's: min_scale replicas of a stopped exposed service again."""
    platform.exposed.start_again(service)
    return {"service_name": service, **platform.exposed.status(service)}


@router.post(
    "/system/services/{service}/restart", dependencies=[ServiceChanger], responses=LIFECYCLE
)
def restart(service: str, platform: PlatformDep) -> dict[str, Any]:
    """OSCAR's: new replicas for all of the exposed service's; each old one stops once as
    many new ones are up, so that it keeps serving."""
    platform.exposed.restart(service)
    return {"service_name": service, **platform.exposed.status(service)}
