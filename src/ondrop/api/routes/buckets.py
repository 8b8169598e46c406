"""/system/buckets: OSCAR's buckets (create, list, get with its objects, update, delete,
presigned URLs) on the platform's store or, with `provider`, any other (ondrop); and
/presigned, where the URLs of a local store's objects lead."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ondrop.api.deps import Admin, PlatformDep
from ondrop.api.openapi import READS, WRITES, errors
from ondrop.api.routes.files import stored_body, streamed
from ondrop.errors import DefinitionError
from ondrop.storage import canonical

router = APIRouter(tags=["buckets"], responses=errors(400, 404, 500, 502, *READS))
DEFAULT = "minio.default"
PROVIDER = "the storage provider (ondrop's; default the platform's own store, minio.default)"


def _fields(raw: Any) -> tuple[str, str, list[str]]:
    """bucket_name, visibility and allowed_users of OSCAR's bucket JSON."""
    if not isinstance(raw, dict) or not isinstance(raw.get("bucket_name"), str):
        raise DefinitionError(
            'expected {"bucket_name": name, "visibility": "private" | "public" | '
            '"restricted", "allowed_users": [user, ...]}'
        )
    visibility = raw.get("visibility") or ""
    if not isinstance(visibility, str):
        raise DefinitionError("visibility: expected private, public or restricted")
    return raw["bucket_name"], visibility.strip().lower(), raw.get("allowed_users") or []


@router.get("/system/buckets", dependencies=[Admin], responses=errors(401))
def list_buckets(platform: PlatformDep, provider: str = DEFAULT) -> list[dict[str, Any]]:
    """Every bucket of the provider, with OSCAR's fields (`metadata.service` marks a
    bucket a service uses)."""
    return [b.shown() for b in platform.buckets.all(provider)]


@router.get("/system/buckets/{bucket}", dependencies=[Admin], responses=errors(401))
def get_bucket(
    bucket: str, platform: PlatformDep, provider: str = DEFAULT, page: str = ""
) -> dict[str, Any]:
    """The bucket and a page of its objects (`object_name`, `size_bytes`,
    `last_modified`); `next_page` is the `page` of the next one while `is_truncated`."""
    found, objects, more = platform.buckets.get(provider, bucket, page)
    answer = {
        **found.shown(),
        "objects": objects,
        "is_truncated": bool(more),
        "returned_items": len(objects),
    }
    if more:
        answer["next_page"] = more
    return answer


@router.post(
    "/system/buckets",
    status_code=201,
    dependencies=[Admin],
    responses=errors(401, 409, 422, *WRITES, why={409: "the bucket exists already"}),
)
def create_bucket(
    platform: PlatformDep, raw: Any = Body(), provider: str = DEFAULT
) -> dict[str, Any]:
    """Create a bucket (`bucket_name` may go on with folders, which are made too)."""
    name, visibility, allowed = _fields(raw)
    return platform.buckets.create(provider, name, visibility, allowed).shown()


@router.put(
    "/system/buckets",
    status_code=204,
    dependencies=[Admin],
    responses=errors(401, 409, 422, *WRITES, why={409: "a service uses the bucket"}),
)
def update_bucket(platform: PlatformDep, raw: Any = Body(), provider: str = DEFAULT) -> Response:
    """Change a bucket's visibility and allowed users."""
    name, visibility, allowed = _fields(raw)
    platform.buckets.update(provider, name, visibility, allowed)
    return Response(status_code=204)


@router.delete(
    "/system/buckets/{bucket}",
    status_code=204,
    dependencies=[Admin],
    responses=errors(401, 409, *WRITES, why={409: "a service uses the bucket"}),
)
def delete_bucket(bucket: str, platform: PlatformDep, provider: str = DEFAULT) -> Response:
    """Delete the bucket and every object in it. A bucket a service reads or writes is
    refused (409): remove the service first."""
    platform.buckets.delete(provider, bucket)
    return Response(status_code=204)


@router.post(
    "/system/buckets/{bucket}/presign",
    dependencies=[Admin],
    responses=errors(401, 422),
)
def presign(
    bucket: str,
    request: Request,
    platform: PlatformDep,
    raw: Any = Body(),
    provider: str = DEFAULT,
) -> dict[str, Any]:
    """A URL to download (GET) or upload (PUT) one object with no other credentials:
    `{"object_key", "operation": "download" | "upload", "expires_in": seconds (default
    900, at most 7 days), "content_type"}` (`expires`, as oscar-python sends it, works
    too). An upload through it is an upload like any other: it starts the jobs of the
    services whose input it lands in."""
    if not isinstance(raw, dict) or not isinstance(raw.get("object_key"), str):
        raise DefinitionError(
            'expected {"object_key": key, "operation": "download" | "upload", '
            '"expires_in": seconds}'
        )
    expires = raw.get("expires_in") or raw.get("expires") or 0
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise DefinitionError("expires_in: expected a whole number of seconds")
    content_type = raw.get("content_type") or ""
    if not isinstance(content_type, str):
        raise DefinitionError("content_type: expected text")
    return platform.buckets.presign(
        provider,
        bucket,
        raw["object_key"],
        str(raw.get("operation") or ""),
        expires,
        content_type,
        str(request.base_url),
    )


Expires = Annotated[
    int, Query(ge=0, le=2**53, description="when the URL stops working (seconds since the epoch)")
]
SIGNED = {403: "the signature is wrong or has expired", 422: "no expires or signature"}


@router.get(
    "/presigned/{provider}/{key:path}",
    response_class=StreamingResponse,
    responses=errors(403, 422, why=SIGNED),
)
def presigned_download(
    provider: str, key: str, platform: PlatformDep, expires: Expires, signature: str
) -> StreamingResponse:
    """Download through a URL from /system/buckets/{bucket}/presign (no credentials: the
    URL's signature is them; it is checked before anything else is looked at)."""
    platform.buckets.check_signature("GET", canonical(provider), key, expires, signature)
    return streamed(platform.providers.get(provider), key)


@router.put(
    "/presigned/{provider}/{key:path}",
    status_code=201,
    responses=errors(403, 413, 422, *WRITES, why=SIGNED),
)
async def presigned_upload(
    provider: str,
    key: str,
    request: Request,
    platform: PlatformDep,
    expires: Expires,
    signature: str,
) -> dict[str, Any]:
    """Upload through a URL from /system/buckets/{bucket}/presign."""
    await run_in_threadpool(
        platform.buckets.check_signature, "PUT", canonical(provider), key, expires, signature
    )
    return await stored_body(platform, platform.providers.get(provider), key, request)
