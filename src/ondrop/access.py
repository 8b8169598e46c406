"""Who may do what with a service, as OSCAR decides it.

The admin may do anything. A signed-in user (an OIDC token) lists, reads and runs a
service they own, a public one, or a restricted one that lists them in `allowed_users`;
a service with a `vo` is for that VO's members only (its owner aside). Only the owner (or
the admin) changes or removes a service. A service's own token runs that service and
nothing else (api/auth.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ondrop.errors import ForbiddenError
from ondrop.fdl.models import ADMIN_OWNER, Service
from ondrop.storage import canonical


@dataclass(frozen=True)
class User:
    """A signed-in user: their id at the issuer (`sub`), name, and VOs."""

    sub: str
    name: str = ""
    vos: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user, or the admin (`user` None)."""

    user: User | None = None

    @property
    def admin(self) -> bool:
        return self.user is None

    def __str__(self) -> str:
        return "the admin" if self.user is None else f"user {self.user.sub!r}"


ADMIN = Caller()


def may_see(service: Service, caller: Caller) -> bool:
    """May `caller` list, read and run `service` (and read its jobs)?"""
    return visible(caller, service.owner, service.visibility, service.allowed_users, service.vo)


def visible(
    caller: Caller, owner: str, visibility: str, allowed_users: Iterable[str], vo: str = ""
) -> bool:
    """May `caller` see what `owner` has with this visibility (a service, a bucket)?"""
    user = caller.user
    if user is None or owner == user.sub:
        return True
    if vo and vo not in user.vos:
        return False
    if visibility == "public":
        return True
    return visibility == "restricted" and user.sub in allowed_users


def may_change(service: Service, caller: Caller) -> bool:
    """May `caller` change or remove `service` (and its jobs)?"""
    return caller.user is None or service.owner == caller.user.sub


def seen(service: Service, caller: Caller) -> Service:
    """`service`, or a 403 when `caller` may not see it."""
    if not may_see(service, caller):
        raise ForbiddenError(f"{caller} may not use the service {service.name!r}")
    return service


def changed(service: Service, caller: Caller) -> Service:
    """`service`, or a 403 when `caller` may not change it."""
    if not may_change(service, caller):
        raise ForbiddenError(
            f"{caller} may not change the service {service.name!r}: only its owner and the "
            "admin may"
        )
    return service


def owned(
    service: Service,
    caller: Caller,
    before: Service | None,
    services: Mapping[str, Service],
    groups: Iterable[str] = (),
    isolated: bool = True,
    bucket_owner: Callable[[str, str], str | None] = lambda provider, bucket: None,
) -> Service:
    """`service` as `caller` applies it, with its owner: the one it had (`before`: an
    owner never changes), else the user who creates it (the admin's: the owner given,
    else cluster_admin). A user gives only a VO they are in; with none given, the first
    of the platform's `groups` they are in (as OSCAR). A 403 when `caller` may not change
    `before`, or a user's service would reach what is not theirs (`confined`)."""
    if before is not None:
        changed(before, caller)
    user = caller.user
    if user is None:
        owner = before.owner if before is not None else service.owner
        return service.model_copy(update={"owner": owner or ADMIN_OWNER})
    vo = service.vo
    if vo and vo not in user.vos and not (before is not None and before.vo == vo):
        raise ForbiddenError(
            f"service {service.name!r}: vo {vo!r} is not one of {caller}'s VOs "
            f"({', '.join(sorted(user.vos)) or 'none'})"
        )
    if not vo:
        vo = next((g for g in groups if g in user.vos), "")
    owner = before.owner if before is not None else user.sub
    claimed = service.model_copy(update={"owner": owner, "vo": vo})
    confined(claimed, services, isolated, bucket_owner)
    return claimed


def confined(
    service: Service,
    services: Mapping[str, Service],
    isolated: bool,
    bucket_owner: Callable[[str, str], str | None] = lambda provider, bucket: None,
) -> None:
    """A 403 unless a user's `service` reaches only what is its owner's: no folder of the
    platform's host (a `local` provider), no script on the host unless the platform runs
    each job as a user of its own (`isolated`), no provider another owner's service
    declares, and no bucket of the platform's stores another owner's service uses."""
    name = service.name
    if "local" in service.storage_providers:
        raise ForbiddenError(
            f"service {name!r}: a user's service may not declare local providers (folders of "
            "the platform's machine); use an object store (minio, s3), WebDAV or Onedata"
        )
    if not isolated and (service.runtime == "process" or not service.image):
        raise ForbiddenError(
            f"service {name!r}: this platform cannot run a user's script on its host apart "
            "from its own files (it does not run as root): give the service an image"
        )
    others = [s for s in services.values() if s.owner != service.owner and s.name != name]
    theirs = {
        canonical(f"{k}.{i}") for s in others for k, ids in s.storage_providers.items() for i in ids
    }
    declared = {canonical(f"{k}.{i}") for k, ids in service.storage_providers.items() for i in ids}
    if taken := sorted(declared & theirs):
        raise ForbiddenError(
            f"service {name!r}: storage provider {taken[0]} is declared by another owner's "
            "service: give yours another id"
        )
    used = {
        (canonical(io.storage_provider), _bucket(io.path))
        for s in others
        for io in [*s.input, *s.output]
    }
    for io in [*service.input, *service.output]:
        provider = canonical(io.storage_provider)
        if provider in theirs:
            raise ForbiddenError(
                f"service {name!r}: storage provider {provider} is another owner's"
            )
        if provider in declared:
            continue
        bucket = _bucket(io.path)
        owner = bucket_owner(provider, bucket)
        if (provider, bucket) in used or owner not in (None, service.owner):
            raise ForbiddenError(
                f"service {name!r}: the bucket {bucket!r} of {provider} is another owner's: "
                "choose another"
            )


def _declared(service: Service) -> set[str]:
    return {canonical(f"{k}.{i}") for k, ids in service.storage_providers.items() for i in ids}


def _bucket(path: str) -> str:
    return path.strip("/").partition("/")[0]
