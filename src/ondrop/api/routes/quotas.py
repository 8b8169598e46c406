"""/system/quotas/user: OSCAR's per-user quotas (quotas.py): a user reads their own, the
admin reads and sets anyone's. cpu is in millicores and memory in bytes, as OSCAR's;
ondrop adds `jobs` (jobs at once), and `max` is -1 where there is no limit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from ondrop.api.deps import Admin, PlatformDep, SignedIn
from ondrop.api.openapi import errors
from ondrop.errors import BadRequestError
from ondrop.fdl.models import ADMIN_OWNER

router = APIRouter(tags=["quotas"], responses=errors(401, 500))
# OSCAR's QuotaUpdateRequest fields ondrop has nothing to limit with.
UNLIMITED = {
    "ephemeral_storage": "disk per user",
    "volumes": "managed volumes",
    "minio": "buckets per user",
}


@router.get("/system/quotas/user")
def own_quota(platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    """The caller's quota and what their running jobs use (the admin's: none)."""
    user = ADMIN_OWNER if who.user is None else who.user.sub
    return platform.quotas.shown(user, platform.services.all())


@router.get("/system/quotas/user/{user}", dependencies=[Admin], responses=errors(403))
def user_quota(user: str, platform: PlatformDep) -> dict[str, Any]:
    """A user's quota and what their running jobs use (the admin only)."""
    return platform.quotas.shown(user, platform.services.all())


@router.put(
    "/system/quotas/user/{user}",
    dependencies=[Admin],
    responses=errors(400, 403, 422, why={400: "no limit to change was given"}),
)
def set_user_quota(
    user: str,
    platform: PlatformDep,
    body: dict[str, Any] = Body(
        openapi_examples={"quota": {"value": {"cpu": "4", "memory": "16Gi"}}}
    ),
) -> dict[str, Any]:
    """Set a user's quota (the admin only); the limits not given stay as they were. Jobs
    over it wait until the user's running jobs leave room."""
    unknown = set(body) - {"cpu", "memory", "gpu", "jobs", *UNLIMITED}
    if unknown:
        raise BadRequestError(f"unknown quota fields: {', '.join(sorted(unknown))}")
    for field, what in UNLIMITED.items():
        if body.get(field) not in (None, "", {}):
            raise BadRequestError(f"{field}: ondrop does not limit {what}; leave it out")
    given = {k: v for k, v in body.items() if k not in UNLIMITED and v not in (None, "")}
    if not given:
        raise BadRequestError("cpu, memory, gpu or jobs must be given")
    if user == ADMIN_OWNER:
        raise BadRequestError(f"{ADMIN_OWNER} (the admin) has no quota")
    limits = (platform.quotas.of(user) or platform.quotas.default).changed(given)
    platform.quotas.set(user, limits)
    for pool in platform.pools.values():  # a raised quota may let waiting jobs start
        pool.wake()
    return platform.quotas.shown(user, platform.services.all())
