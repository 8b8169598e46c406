"""What the OpenAPI document says beyond the routes' signatures: the one error body every
error answers (`Error`), the statuses each operation can answer with their headers, the
credentials schemes, and the raw bodies some operations read. Generated clients are built
from this; tests/api/test_openapi.py checks that the API answers nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import HTTPBase, HTTPBearer
from fastapi.openapi.utils import get_openapi
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, Field


class Error(BaseModel):
    """The body of every error answer (4xx and 5xx), whatever raised it."""

    detail: str = Field(description="what went wrong and what to do, for a person to read")


# What each status means, said once; an operation may say more for its own case.
MEANING: dict[int, str] = {
    400: "an unsafe object key or file name (the message names the character and its "
    "position), or a malformed storage event",
    401: "missing or wrong credentials",
    403: "these credentials do not allow this",
    404: "no such service, job, object or storage provider",
    409: "the request clashes with the current state",
    413: "the body is over the upload limit (setting ONDROP_MAX_UPLOAD)",
    422: "a parameter or the body is not what the operation takes; the message names it",
    500: "internal error, a bug: the platform's log has details",
    502: "a storage provider failed",
    503: "it passes: try again after Retry-After seconds (the database is locked by another "
    "program, the store failed, a storage provider cannot be reached now, or the platform "
    "is stopping)",
    507: "a disk the platform writes to is full: the message says which (the data folder, "
    "or a local provider by name) and to free space there",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the credentials to send",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}
ERROR = "#/components/schemas/Error"
# Every operation may meet a bug; every one that reads or writes the store may find it
# failed or locked (503); every one that writes may find a disk full (507).
READS = (500, 503)
WRITES = (500, 503, 507)


def errors(*statuses: int, why: Mapping[int, str] | None = None) -> dict[int | str, Any]:
    """The `responses` of an operation that can answer `statuses`, each with the Error
    body (and its headers); `why` says what a status means for this operation."""
    said = dict(why or {})
    if not set(said) <= set(statuses):
        raise ValueError(f"`why` names statuses the operation does not answer: {said}")
    answers: dict[int | str, Any] = {}
    for status in sorted(set(statuses)):
        answer: dict[str, Any] = {
            "description": said.get(status, MEANING[status]),
            "content": {"application/json": {"schema": {"$ref": ERROR}}},
        }
        if status in HEADERS:
            answer["headers"] = HEADERS[status]
        answers[status] = answer
    return answers


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document: FastAPI's, with `Error` among its schemas. FastAPI adds
    a 422 of its own validation shape to every operation that has parameters; this API
    never answers that shape (its handler answers `Error`), and operations list their own
    422 where a parameter or body can be refused, so FastAPI's are dropped."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        for operations in doc["paths"].values():
            for operation in operations.values():
                refused = operation["responses"].get("422", {})
                if "HTTPValidationError" in str(refused):
                    del operation["responses"]["422"]
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for fastapis in ("HTTPValidationError", "ValidationError"):
            schemas.pop(fastapis, None)
        schemas["Error"] = Error.model_json_schema()
        app.openapi_schema = doc
    return app.openapi_schema


def raw_body(description: str, invocation: bool = True) -> dict[str, Any]:
    """`openapi_extra` for an operation that reads its body as a stream rather than as a
    parameter: any bytes; an invocation also tells JSON and (base64) text apart."""
    content: dict[str, Any] = {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    if invocation:
        content["application/json"] = {"schema": {}}
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"requestBody": {"description": description, "required": False, "content": content}}


def tar_body() -> dict[str, Any]:
    """`openapi_extra` for an operation that reads an uncompressed tar of files (as
    `application/x-tar`, or any bytes: the body is read as a tar whatever its type)."""
    return {
        "requestBody": {
            "description": "an uncompressed tar of the files (regular files only)",
            "required": True,
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("application/x-tar", "application/octet-stream")
            },
        }
    }


def header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    """One response header, as a `headers` entry."""
    return {name: {"description": description, "required": required, "schema": {"type": "string"}}}


class Scheme(SecurityBase):
    """A credentials scheme as the document declares it. It checks nothing: api/auth.py
    does, so that an operation can take either of two schemes."""

    def __init__(self, name: str, model: HTTPBase) -> None:
        self.scheme_name = name
        self.model = model

    async def __call__(self) -> None:
        return None


ADMIN_BASIC = Scheme(
    "admin",
    HTTPBase(scheme="basic", description="the admin's user and password (`ondrop up` prints them)"),
)
SERVICE_TOKEN = Scheme(
    "serviceToken",
    HTTPBearer(description="the service's `token`, from GET /system/services/{name}"),
)
OIDC_TOKEN = Scheme(
    "oidc",
    HTTPBearer(
        bearerFormat="JWT",
        description="a user's OIDC access token, from an issuer in ONDROP_OIDC_ISSUERS",
    ),
)
WEBHOOK_TOKEN = Scheme(
    "webhookToken",
    HTTPBearer(description="the token ondrop gave the bundled object store's filer"),
)
