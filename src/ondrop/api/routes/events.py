"""/events/seaweedfs: the bundled store's filer webhook (one POST per created or updated
entry), authenticated by the bearer token ondrop gave it."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool

from ondrop.api.deps import PlatformDep
from ondrop.api.openapi import WEBHOOK_TOKEN, WRITES, errors
from ondrop.errors import AuthError, InvalidKeyError, NotFoundError
from ondrop.storage.base import check_key

router = APIRouter(tags=["events"])
BUCKETS = "/buckets/"


def object_key(event: Any) -> str | None:
    """`bucket/key` of a filer event about a stored object; None for anything else
    (folders, multipart parts under .uploads, the .system bucket)."""
    if not isinstance(event, dict) or event.get("event_type") not in ("create", "update"):
        return None
    message = event.get("message")
    entry = message.get("new_entry") if isinstance(message, dict) else None
    path = event.get("key")
    if not isinstance(path, str) or not path.startswith(BUCKETS):
        return None
    if isinstance(entry, dict) and entry.get("is_directory"):
        return None
    parts = path[len(BUCKETS) :].split("/")
    if len(parts) >= 2 and parts[-2].endswith(".versions") and parts[-1].startswith("v_"):
        # A versioned bucket keeps `key.versions/v_<id>`: the object is `key`.
        parts = [*parts[:-2], parts[-2].removesuffix(".versions")]
    if any(part.startswith(".") for part in parts):
        return None
    try:
        return check_key("/".join(parts))
    except InvalidKeyError:
        return None


@router.post(
    "/events/seaweedfs",
    dependencies=[Security(WEBHOOK_TOKEN)],
    responses=errors(
        400,
        401,
        404,
        502,
        *WRITES,
        why={
            400: "the body is not JSON",
            401: "the webhook token is wrong",
            404: "this platform runs no bundled object store",
        },
    ),
    openapi_extra={
        "requestBody": {
            "description": "a SeaweedFS filer event",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def seaweedfs(request: Request, platform: PlatformDep) -> dict[str, Any]:
    store = platform.object_store
    if store is None:
        raise NotFoundError("this platform runs no bundled object store")
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), store.webhook_token.encode()):
        raise AuthError("the webhook token is wrong")
    try:
        body = await request.json()
    except ValueError:
        raise InvalidKeyError("the webhook body is not JSON") from None
    key = object_key(body)
    if key is None or "/" not in key:
        return {"jobs": []}
    provider = platform.providers.get("minio.default")
    info = await run_in_threadpool(provider.stat, key)
    if info is None:
        return {"jobs": []}
    jobs = await run_in_threadpool(platform.intake.object_stored, provider.name, info)
    return {"jobs": [{"service": j.service, "job": j.id} for j in jobs]}
