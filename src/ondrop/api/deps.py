"""What every route needs: the platform, and the credentials checks as dependencies (each
also declares its schemes in the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

from ondrop.api.auth import Credentials, require_admin, require_service
from ondrop.api.openapi import ADMIN_BASIC, SERVICE_TOKEN
from ondrop.errors import NotFoundError
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


def service_access(
    request: Request,
    service: str,
    _token: Annotated[None, Security(SERVICE_TOKEN)],
    _basic: Annotated[None, Security(ADMIN_BASIC)],
) -> None:
    """The service's token or the admin's credentials (the document lists either). A
    service that does not exist is a 404 before any credentials are looked at, as in
    OSCAR's /job and /run."""
    platform = get_platform(request)
    found = platform.services.find(service)
    if found is None:
        raise NotFoundError(f"no service named {service!r}")
    require_service(request, request.app.state.admin, found.token)


PlatformDep = Annotated[Platform, Depends(get_platform)]
Admin = Depends(admin_only)
ServiceAccess = Depends(service_access)
