"""Who is calling: the admin (HTTP basic), a signed-in user (an OIDC bearer token, see
api/oidc.py) or a service's token (bearer, on that service's /job and /run only). What each
may do with a service is access.py's. Wrong or missing credentials get 401."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.requests import HTTPConnection

from ondrop.access import ADMIN, Caller, seen
from ondrop.api.oidc import SignIn
from ondrop.client import CREDENTIALS_FILE
from ondrop.errors import AuthError, DefinitionError
from ondrop.fdl.models import Service
from ondrop.settings import Settings, env_name

# What admin.json says when the platform's password was given to it, never kept there.
GIVEN = "given to `ondrop up` (--admin-password or ONDROP_ADMIN_PASSWORD)"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def stored_credentials(data: Path) -> dict[str, str]:
    """The credentials kept in the data folder ({} when there are none)."""
    path = data / CREDENTIALS_FILE
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        return {k: str(v) for k, v in stored.items() if k in {"user", "password", "password_from"}}
    except (OSError, ValueError) as exc:
        raise DefinitionError(
            f"cannot read the admin credentials in {path} ({exc}); remove the file to have "
            "new ones generated, or give ONDROP_ADMIN_PASSWORD"
        ) from None


def admin_credentials(settings: Settings) -> Credentials:
    """The admin's credentials: from settings, else kept in the data folder, else new ones
    (written there, readable by the owner only)."""
    data = Path(settings.data)
    stored = stored_credentials(data)
    user = settings.admin_user or stored.get("user") or "admin"
    if settings.admin_password:
        # Given: never written to disk. One kept from before no longer works: it is taken
        # out, so that a command in another shell is told where the password now comes
        # from rather than sending the old one.
        if stored.get("password") and stored["password"] != settings.admin_password:
            _keep(data, {"user": user, "password_from": GIVEN})
        return Credentials(user, settings.admin_password)
    password = stored.get("password") or secrets.token_urlsafe(18)
    if stored != {"user": user, "password": password}:
        _keep(data, {"user": user, "password": password})
    return Credentials(user, password)


def _keep(data: Path, credentials: dict[str, str]) -> None:
    """Write admin.json, readable by its owner only."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data / CREDENTIALS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(credentials, f)


def _basic(request: HTTPConnection) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed basic credentials") from None
    return user, password


def _bearer(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _admin_problem(request: HTTPConnection, admin: Credentials) -> str | None:
    """What is wrong with the admin's credentials in `request`; None when they are right.
    Both parts are compared in constant time, whichever is wrong."""
    given = _basic(request)
    if given is None:
        return "admin credentials required (HTTP basic auth); none were given"
    ok_user = secrets.compare_digest(given[0].encode(), admin.user.encode())
    ok_password = secrets.compare_digest(given[1].encode(), admin.password.encode())
    if not ok_user:
        return f"unknown user {given[0]!r}: the platform's admin has another name"
    if not ok_password:
        return f"wrong password for the admin {given[0]!r}"
    return None


def is_admin(request: Request, admin: Credentials) -> bool:
    return _admin_problem(request, admin) is None


def require_admin(request: HTTPConnection, admin: Credentials) -> None:
    """The admin's credentials, or a 401 saying which part is missing or wrong."""
    if problem := _admin_problem(request, admin):
        raise AuthError(problem)


def caller(request: Request, admin: Credentials, signin: SignIn) -> Caller:
    """The admin (HTTP basic) or a signed-in user (an OIDC bearer token), else a 401 that
    says what is missing or wrong."""
    token = _bearer(request)
    if token is None:
        if signin and not request.headers.get("authorization"):
            raise AuthError(
                "credentials required: the admin's (HTTP basic) or a user's OIDC token "
                "(Authorization: Bearer <token>)"
            )
        require_admin(request, admin)
        return ADMIN
    if not signin:
        raise AuthError(
            "a bearer token was given, but this platform signs in no users "
            f"({env_name('oidc_issuers')} is empty): give the admin's HTTP basic credentials"
        )
    user = signin.user(token)
    if user is None:
        raise AuthError(
            "the bearer token is not an OIDC token: a service's token runs that service "
            "(/job and /run) and nothing else"
        )
    return Caller(user)


def require_service(
    request: HTTPConnection, admin: Credentials, signin: SignIn, service: Service
) -> None:
    """The bearer token of the service, the admin, or a signed-in user who may use it."""
    given = _bearer(request)
    if given is None:
        if _basic(request) is not None:  # the admin's, then: say what is wrong with them
            require_admin(request, admin)
            return
        raise AuthError("the service's token is required (Authorization: Bearer <token>)")
    if secrets.compare_digest(given.encode(), service.token.encode()):
        return
    user = signin.user(given) if signin else None
    if user is None:
        raise AuthError("this token does not grant access to this service")
    seen(service, Caller(user))


def lets_in(
    request: HTTPConnection, admin: Credentials, signin: SignIn, services: Iterable[Service]
) -> bool:
    """Whether the request's Authorization opens anything of the platform's: the admin's
    basic credentials, a service's token (bearer, or basic with its name), or a token of
    the platform's OIDC issuers. What a caller holds for a server of its own (an exposed
    service's) does not."""
    try:
        given = _basic(request)
    except AuthError:
        return False
    token = _bearer(request)
    if given is None and token is None:
        return False
    if given is not None:
        if _admin_problem(request, admin) is None:
            return True
        user, token = given
        services = [s for s in services if s.name == user]
    assert token is not None
    if any(secrets.compare_digest(token.encode(), s.token.encode()) for s in services):
        return True
    return given is None and bool(signin) and signin.issued_for(token)


def require_exposed(
    request: HTTPConnection, admin: Credentials, signin: SignIn, service: Service
) -> None:
    """An exposed service's `set_auth`: OSCAR's basic credentials (the service's name and
    its token), or what require_service takes."""
    given = _basic(request)
    if given is not None and given[0] == service.name:
        if not secrets.compare_digest(given[1].encode(), service.token.encode()):
            raise AuthError(f"wrong token for service {service.name!r} (the basic password)")
        return
    if given is None and _bearer(request) is None:
        raise AuthError(
            f"service {service.name!r} asks for its token: basic credentials (user "
            f"{service.name!r}, its token as the password) or Authorization: Bearer <token>"
        )
    require_service(request, admin, signin, service)
