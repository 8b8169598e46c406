"""The REST API: OSCAR's paths and shapes where OSCAR has them, ondrop's beside them.

`create_app(platform)` serves one platform; the platform starts and stops with
the app. Every error answers one shape, `{"detail": message}` (api/openapi.py's `Error`):
each OndropError one HTTP status (and `Retry-After` where waiting helps); a full disk is 507
wherever it is met, never a 500. The OpenAPI document lists every status an operation
can answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ondrop import __version__
from ondrop.api.auth import Credentials
from ondrop.api.docs import serve_docs
from ondrop.api.executions import ExecutionLogger, Executions
from ondrop.api.metered import Metered
from ondrop.api.methods import AllowedMethods
from ondrop.api.oidc import SignIn
from ondrop.api.openapi import document
from ondrop.api.routes import (
    buckets,
    events,
    exposed,
    files,
    invoke,
    logs,
    metrics,
    prometheus,
    quotas,
    services,
    system,
)
from ondrop.errors import AuthError, DiskFullError, OndropError, disk_full
from ondrop.platform import Platform
from ondrop.ui import serve_ui

log = logging.getLogger(__name__)
# What FastAPI answers (400) for a JSON body it cannot even decode as text.
UNPARSED_BODY = "There was an error parsing the body"


def create_app(platform: Platform, admin: Credentials, manage: bool = True) -> FastAPI:
    """The API of `platform`; with `manage` the app starts and stops the platform."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            platform.start()
        try:
            yield
        finally:
            if manage:
                platform.stop()

    app = FastAPI(
        title="ondrop",
        version=__version__,
        description="Event-driven file processing. OSCAR-compatible paths under /system, "
        "/job and /run; `/system/*` needs the admin's HTTP basic credentials (or, for "
        "services and their jobs, a user's OIDC token), `/job` and `/run` a service's bearer "
        "token, the admin's or a user's who may use the service.",
        lifespan=lifespan,
        docs_url=None,  # served offline instead (api/docs.py)
        redoc_url=None,
    )
    serve_docs(app)
    serve_ui(app)
    app.state.platform = platform
    app.state.admin = admin
    app.state.signin = SignIn.of(platform.settings)
    app.state.executions = Executions()

    @app.exception_handler(OndropError)
    async def ondrop_error(request: Request, exc: OndropError) -> JSONResponse:
        headers = {}
        if isinstance(exc, AuthError) and "x-requested-with" not in request.headers:
            headers["WWW-Authenticate"] = 'Basic realm="ondrop"'  # no browser prompt for /ui
        status = exc.status_code
        if isinstance(exc, DiskFullError):
            if exc.folder is not None:
                platform.space.met(exc.folder)  # /health says so while it lasts
        elif status >= 500 and disk_full(exc):  # a provider's write that met a full disk
            status = DiskFullError.status_code
        if exc.retry_after is not None and status == 503:
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"detail": str(exc)}, status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # loc: ("body", the character's index)
                why = (err.get("ctx") or {}).get("error", "")
                where = err.get("loc", ("body", 0))[-1]
                problems.append(f"the body is not JSON ({why} at character {where})")
                continue
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(problems)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == UNPARSED_BODY:  # not UTF-8
            return JSONResponse({"detail": "the body is not JSON (it is not UTF-8 text)"}, 422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        if disk_full(exc):
            log.warning("%s %s: a disk is full: %s", request.method, request.url.path, exc)
            return JSONResponse(
                {
                    "detail": f"no space left on a disk the platform writes to ({exc}); free "
                    "space there (GET /system/status says what is full), then try again"
                },
                DiskFullError.status_code,
            )
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the platform's log has details"},
            500,
        )

    for module in (
        system,
        services,
        exposed,
        logs,
        invoke,
        files,
        buckets,
        quotas,
        metrics,
        prometheus,
        events,
    ):
        app.include_router(module.router)
    app.add_middleware(AllowedMethods, routes=app.router.routes)
    app.add_middleware(ExecutionLogger, executions=app.state.executions)
    app.add_middleware(Metered, telemetry=platform.telemetry)
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    return app
