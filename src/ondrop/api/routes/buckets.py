"""/system/buckets: OSCAR's buckets (create, list, get with its objects, update, delete,
presigned URLs) on the platform's store or, with `provider`, any other (ondrop); and
/presigned, where the URLs of a local store's objects lead."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ondrop.access import Caller, visible
from ondrop.api.deps import PlatformDep, SignedIn
from ondrop.api.openapi import READS, WRITES, errors
from ondrop.api.routes.files import stored_body, streamed
from ondrop.buckets import OWNER, Bucket
from ondrop.errors import DefinitionError, ForbiddenError
from ondrop.platform import Platform
from ondrop.storage import canonical

router = APIRouter(tags=["buckets"], responses=errors(400, 403, 404, 500, 502, *READS))
DEFAULT = "minio.default"
PROVIDER = "the storage provider (ondrop's; default the platform's own store, minio.default)"


def _users_store(provider: str, who: Caller) -> None:
    """A user's buckets are on the platform's store; the admin's anywhere."""
    if not who.admin and canonical(provider) != DEFAULT:
        raise ForbiddenError(f"{who}: a user's buckets are on {DEFAULT}, not {provider}")


def _bucket(platform: Platform, provider: str, name: str, who: Caller, change: bool) -> Bucket:
    """The bucket, when `who` may see it (`change`: change it, as its owner)."""
    _users_store(provider, who)
    bucket = platform.buckets.find(provider, name)
    user = who.user
    if user is None or bucket.owner == user.sub:
        return bucket
    if change or not visible(who, bucket.owner, bucket.visibility, bucket.allowed_users):
        what = "change" if change else "use"
        raise ForbiddenError(f"{who} may not {what} the bucket {bucket.name!r}")
    return bucket


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


@router.get("/system/buckets", responses=errors(401))
def list_buckets(
    platform: PlatformDep, who: SignedIn, provider: str = DEFAULT
) -> list[dict[str, Any]]:
    """The buckets of the provider `who` may see (the admin: all), with OSCAR's fields
    (`metadata.service` marks a bucket a service uses)."""
    _users_store(provider, who)
    return [
        b.shown()
        for b in platform.buckets.all(provider)
        if visible(who, b.owner, b.visibility, b.allowed_users)
    ]


@router.get("/system/buckets/{bucket}", responses=errors(401))
def get_bucket(
    bucket: str, platform: PlatformDep, who: SignedIn, provider: str = DEFAULT, page: str = ""
) -> dict[str, Any]:
    """The bucket and a page of its objects (`object_name`, `size_bytes`,
    `last_modified`); `next_page` is the `page` of the next one while `is_truncated`."""
    _bucket(platform, provider, bucket, who, change=False)
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
    responses=errors(401, 409, 422, *WRITES, why={409: "the bucket exists already"}),
)
def create_bucket(
    platform: PlatformDep, who: SignedIn, raw: Any = Body(), provider: str = DEFAULT
) -> dict[str, Any]:
    """Create a bucket (`bucket_name` may go on with folders, which are made too), owned
    by the user who makes it."""
    name, visibility, allowed = _fields(raw)
    _users_store(provider, who)
    owner = who.user.sub if who.user is not None else OWNER
    return platform.buckets.create(provider, name, visibility, allowed, owner).shown()


@router.put(
    "/system/buckets",
    status_code=204,
    responses=errors(401, 409, 422, *WRITES, why={409: "a service uses the bucket"}),
)
def update_bucket(
    platform: PlatformDep, who: SignedIn, raw: Any = Body(), provider: str = DEFAULT
) -> Response:
    """Change a bucket's visibility and allowed users: its owner or the admin."""
    name, visibility, allowed = _fields(raw)
    _bucket(platform, provider, name, who, change=True)
    platform.buckets.update(provider, name, visibility, allowed)
    return Response(status_code=204)


@router.delete(
    "/system/buckets/{bucket}",
    status_code=204,
    responses=errors(401, 409, *WRITES, why={409: "a service uses the bucket"}),
)
def delete_bucket(
    bucket: str, platform: PlatformDep, who: SignedIn, provider: str = DEFAULT
) -> Response:
    """Delete the bucket and every object in it: its owner or the admin. A bucket a
    service reads or writes is refused (409): remove the service first."""
    _bucket(platform, provider, bucket, who, change=True)
    platform.buckets.delete(provider, bucket)
    return Response(status_code=204)


@router.post(
    "/system/buckets/{bucket}/presign",
    responses=errors(401, 422),
)
def presign(
    bucket: str,
    request: Request,
    platform: PlatformDep,
    who: SignedIn,
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
    found = _bucket(platform, provider, bucket, who, change=False)
    upload = str(raw.get("operation") or "").strip().lower() == "upload"
    if upload and who.user is not None and who.user.sub not in (found.owner, *found.allowed_users):
        raise ForbiddenError(
            f"{who} may read the bucket {found.name!r} but not write to it: its owner and "
            "its allowed_users may"
        )
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
