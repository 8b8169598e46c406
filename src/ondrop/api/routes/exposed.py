"""/system/services/{name}/exposed/...: the proxy to an exposed service's replicas (HTTP,
streamed both ways, and websockets), and OSCAR's start, stop and restart of them.

A request goes to a replica that is up (the one with fewest requests on it), over a new
connection made in the replica's own network (exposed.py). The server sees the path
below /exposed (with `rewrite_target`, the whole path), the caller's headers less the
hop-by-hop ones (and, with `set_auth`, less the credentials it was let in with), and
X-Forwarded-For/-Host/-Proto/-Prefix. No replica up: 503 with Retry-After; a replica
that does not answer: 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import h11
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ondrop.api.auth import require_exposed
from ondrop.api.deps import PlatformDep, ServiceChanger
from ondrop.api.openapi import errors
from ondrop.errors import BadGatewayError, NotFoundError
from ondrop.exposed import Replica, base_path
from ondrop.fdl.models import Service
from ondrop.platform import Platform

router = APIRouter(tags=["services"], responses=errors(401, 403, 500))

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
CONNECT_TIMEOUT = 10.0
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


def _target(platform: Platform, connection: HTTPConnection, name: str) -> Service:
    """The exposed service `name`, the caller let in as its `set_auth` asks."""
    platform.services.catch_up()
    service = platform.services.find(name)
    if service is None:
        raise NotFoundError(f"no service named {name!r}")
    if service.expose is None:
        raise NotFoundError(f"service {name!r} is not exposed (it has no `expose`)")
    if service.expose.set_auth:
        app = connection.app
        require_exposed(connection, app.state.admin, app.state.signin, service)
    return service


def _path(service: Service, connection: HTTPConnection, path: str) -> str:
    assert service.expose is not None
    target = connection.url.path if service.expose.rewrite_target else "/" + path
    query = connection.url.query
    return target + ("?" + query if query else "")


def _headers(
    service: Service, connection: HTTPConnection, drop: set[bytes]
) -> list[tuple[bytes, bytes]]:
    """The caller's headers for the server, and where the request came from."""
    assert service.expose is not None
    skip = HOP | drop
    if service.expose.set_auth:  # the credentials were ours to check, not the server's
        skip = skip | {b"authorization"}
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
    service = await run_in_threadpool(_target, platform, request, name)
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
        headers = [(b"host", b"localhost"), *_headers(service, request, set())]
        length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if length is not None:
            headers.append((b"content-length", length.encode("latin-1")))
        elif chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        headers.append((b"connection", b"close"))
        writer.write(
            connection.send(
                h11.Request(
                    method=request.method, target=_path(service, request, path), headers=headers
                )
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

        answer = await event()
        while isinstance(answer, h11.InformationalResponse):
            answer = await event()
        if not isinstance(answer, h11.Response):
            raise BadGatewayError(f"replica {replica.id} closed the connection without answering")
    except (OSError, h11.ProtocolError) as exc:
        writer.close()
        release()
        raise BadGatewayError(f"replica {replica.id} gave no valid answer ({exc})") from None
    except BaseException:
        writer.close()
        release()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                got = await event()
                if isinstance(got, h11.Data):
                    yield bytes(got.data)
                elif isinstance(got, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return
        except (OSError, h11.ProtocolError):
            return  # the server went away mid-answer: the client sees it cut short
        finally:
            writer.close()
            release()

    response = StreamingResponse(body(), status_code=answer.status_code)
    response.raw_headers = [
        (k, v) for k, v in answer.headers if k.lower() not in HOP - {b"content-length"}
    ]
    return response


@router.websocket("/system/services/{name}/exposed")
@router.websocket("/system/services/{name}/exposed/{path:path}")
async def proxy_websocket(websocket: WebSocket, name: str, path: str = "") -> None:
    """Websockets to an exposed service, passed to one of its replicas message by message."""
    platform: Platform = websocket.app.state.platform
    try:
        service = await run_in_threadpool(_target, platform, websocket, name)
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
    headers = _headers(service, websocket, WEBSOCKET_OWN | {b"origin"})
    try:
        async with ws_connect(
            f"ws://localhost:{replica.port}{_path(service, websocket, path)}",
            sock=sock,
            additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            subprotocols=protocols or None,  # type: ignore[arg-type]
            origin=websocket.headers.get("origin"),  # type: ignore[arg-type]
            open_timeout=CONNECT_TIMEOUT,
            max_size=None,
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
