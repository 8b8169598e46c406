"""What every route needs: the platform, and the credentials checks as dependencies (each
also declares its schemes in the OpenAPI document)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from starlette.requests import HTTPConnection

from ondrop.access import Caller, changed, seen
from ondrop.api.auth import Credentials, caller, require_admin, require_exposed, require_service
from ondrop.api.openapi import ADMIN_BASIC, OIDC_TOKEN, SERVICE_TOKEN
from ondrop.errors import NotFoundError
from ondrop.fdl.models import Service
from ondrop.platform import Platform


def get_platform(request: Request) -> Platform:
    """The platform, its services as the store has them now (another control plane on a
    shared store may have changed them)."""
    platform: Platform = request.app.state.platform
    platform.services.catch_up()
    return platform


def admin_only(request: Request, _basic: Annotated[None, Security(ADMIN_BASIC)]) -> None:
    admin: Credentials = request.app.state.admin
    require_admin(request, admin)


def signed_in(
    request: Request,
    _basic: Annotated[None, Security(ADMIN_BASIC)],
    _oidc: Annotated[None, Security(OIDC_TOKEN)],
) -> Caller:
    """The admin or a signed-in user."""
    return caller(request, request.app.state.admin, request.app.state.signin)


def _service_check(require: Callable[[HTTPConnection, Any, Any, Service], None]) -> Any:
    """A dependency that lets in what `require` takes for the path's service. A service
    that does not exist is a 404 before any credentials are looked at, as in OSCAR's /job
    and /run."""

    def check(
        request: Request,
        service: str,
        _token: Annotated[None, Security(SERVICE_TOKEN)],
        _basic: Annotated[None, Security(ADMIN_BASIC)],
        _oidc: Annotated[None, Security(OIDC_TOKEN)],
    ) -> None:
        found = get_platform(request).services.find(service)
        if found is None:
            raise NotFoundError(f"no service named {service!r}")
        require(request, request.app.state.admin, request.app.state.signin, found)

    return check


# The service's token, the admin's credentials, or a user who may use the service (the
# document lists each) ...
service_access = _service_check(require_service)
# ... and OSCAR's basic credentials of a service (its name, its token as the password).
exposed_access = _service_check(require_exposed)


def service_reader(
    request: Request, service: str, who: Annotated[Caller, Depends(signed_in)]
) -> None:
    """The admin, or a user who may use `service` (its jobs and logs)."""
    seen(get_platform(request).services.get(service), who)


def service_changer(
    request: Request, service: str, who: Annotated[Caller, Depends(signed_in)]
) -> None:
    """The admin, or the owner of `service` (removing or retrying its jobs)."""
    changed(get_platform(request).services.get(service), who)


PlatformDep = Annotated[Platform, Depends(get_platform)]
SignedIn = Annotated[Caller, Depends(signed_in)]
Admin = Depends(admin_only)
ServiceAccess = Depends(service_access)
ExposedAccess = Depends(exposed_access)
ServiceReader = Depends(service_reader)
ServiceChanger = Depends(service_changer)
