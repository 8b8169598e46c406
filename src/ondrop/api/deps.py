"""What every route needs: the platform, and the credentials checks as dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ondrop.api.auth import Credentials, require_admin, require_service
from ondrop.platform import Platform


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def admin_only(request: Request) -> None:
    admin: Credentials = request.app.state.admin
    require_admin(request, admin)


def service_access(request: Request, service: str) -> None:
    platform = get_platform(request)
    found = platform.services.find(service)
    require_service(request, request.app.state.admin, found.token if found else None)


PlatformDep = Annotated[Platform, Depends(get_platform)]
Admin = Depends(admin_only)
ServiceAccess = Depends(service_access)
