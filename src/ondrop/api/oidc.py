"""Users who sign in with an OIDC token (EGI Check-in, Keycloak, any OpenID provider).

A bearer token is a user's when it is a JWT from one of the issuers the platform takes
(ONDROP_OIDC_ISSUERS): its signature checks against the issuer's published keys (its
JWKS, found through its discovery document and cached), it has not expired, and it is for
the platform's audience when one is set. The user's VOs come from EGI's entitlements
(`eduperson_entitlement`, `entitlements`) or Keycloak's `group_membership`, in the token
or, when it carries none, from the issuer's userinfo.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import jwt

from ondrop.access import User
from ondrop.errors import AuthError, ForbiddenError, UnavailableError
from ondrop.fdl.models import ADMIN_OWNER
from ondrop.settings import Settings, env_name

log = logging.getLogger(__name__)

# Asymmetric algorithms only: a token signed with a shared secret (HS*) or none is refused.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
EGI_GROUPS = "urn:mace:egi.eu:group:"
LEEWAY = 30  # seconds of clock difference tolerated with the issuer
TIMEOUT = 10.0  # seconds to reach an issuer
KEPT_USERINFO = 1024  # userinfo answers cached, until their token expires
RETRY_DISCOVERY = 30.0  # seconds an issuer whose discovery failed is not asked again


def vos(claims: Mapping[str, Any]) -> frozenset[str]:
    """The VOs in a token's or userinfo's claims: EGI's entitlement URNs
    (`urn:mace:egi.eu:group:<vo>[:<subgroup>]:role=member#aai.egi.eu`) name their VO,
    Keycloak's groups (`/vo`) theirs; in lower case, as OSCAR compares them."""
    found: set[str] = set()
    for name in ("eduperson_entitlement", "entitlements"):
        for urn in _texts(claims.get(name)):
            urn = urn.strip().lower()
            if urn.startswith(EGI_GROUPS):
                vo = urn[len(EGI_GROUPS) :].split(":")[0].split("#")[0]
                if vo:
                    found.add(vo)
    found.update(g.strip().strip("/").lower() for g in _texts(claims.get("group_membership")))
    return frozenset(found - {""})


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _carries_groups(claims: Mapping[str, Any]) -> bool:
    return any(k in claims for k in ("eduperson_entitlement", "entitlements", "group_membership"))


class Issuer:
    """One issuer: its discovery document and keys, fetched when first needed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKClient | None = None
        self._failed: tuple[float, UnavailableError] | None = None  # when, and why
        self.userinfo = ""

    def keys(self) -> jwt.PyJWKClient:
        """The issuer's keys, found through its discovery document. A failure is
        remembered for RETRY_DISCOVERY seconds, so that requests do not queue behind an
        issuer that is down; the lock is never held over the network."""
        with self._lock:
            if self._keys is not None:
                return self._keys
            if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_DISCOVERY:
                raise self._failed[1]
        try:
            found = self._discover()
        except UnavailableError as exc:
            with self._lock:
                self._failed = (time.monotonic(), exc)
            raise
        keys = jwt.PyJWKClient(found["jwks_uri"], lifespan=300, timeout=TIMEOUT)
        with self._lock:
            if self._keys is None:
                self._keys, self._failed = keys, None
                self.userinfo = str(found.get("userinfo_endpoint") or "")
            return self._keys

    def _discover(self) -> dict[str, Any]:
        where = self.url.rstrip("/") + "/.well-known/openid-configuration"
        try:
            answer = httpx.get(where, timeout=TIMEOUT)
            answer.raise_for_status()
            found = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UnavailableError(
                f"cannot read the OIDC issuer's discovery document {where} ({exc}); try again later"
            ) from None
        if not isinstance(found, dict) or not isinstance(found.get("jwks_uri"), str):
            raise UnavailableError(f"the OIDC issuer's discovery document {where} has no jwks_uri")
        if str(found.get("issuer", "")).rstrip("/") != self.url.rstrip("/"):
            raise UnavailableError(
                f"the discovery document {where} names another issuer "
                f"({found.get('issuer')!r}), so its keys are not trusted"
            )
        return found

    def signing_key(self, token: str, header: Mapping[str, Any]) -> Any:
        keys = self.keys()
        try:
            if header.get("kid"):
                return keys.get_signing_key_from_jwt(token).key
            signing = keys.get_signing_keys()
        except jwt.PyJWKClientConnectionError as exc:
            raise UnavailableError(
                f"cannot read the keys of the OIDC issuer {self.url}: {exc}"
            ) from None
        except (jwt.PyJWKSetError, ValueError) as exc:  # no usable keys, not JSON
            raise UnavailableError(
                f"the OIDC issuer {self.url}'s keys are unusable: {exc}"
            ) from None
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"the token's signing key is not one of {self.url}'s: {exc}") from None
        if len(signing) != 1:
            raise AuthError("the token names no key (kid) and its issuer has several")
        return signing[0].key


class SignIn:
    """The users the platform takes, from its settings (`oidc_issuers`, `oidc_audience`,
    `oidc_groups`)."""

    def __init__(self, issuers: Iterable[str], audience: str = "", groups: Iterable[str] = ()):
        self.issuers = {url.rstrip("/"): Issuer(url) for url in issuers}
        self.audience = audience
        self.groups = [g.lower() for g in groups]
        self._userinfo: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        if self.issuers and not audience:
            log.warning(
                "%s is empty: tokens for any client of %s are taken; set it to this "
                "platform's client id",
                env_name("oidc_audience"),
                ", ".join(self.issuers),
            )

    @classmethod
    def of(cls, settings: Settings) -> SignIn:
        return cls(settings.issuers, settings.oidc_audience, settings.groups)

    def __bool__(self) -> bool:
        return bool(self.issuers)

    def issued_for(self, token: str) -> bool:
        """Whether `token` is a JWT of one of this platform's issuers, valid or not."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return str(unverified.get("iss", "")).rstrip("/") in self.issuers

    def user(self, token: str) -> User | None:
        """The user `token` signs in, None when it is not a JWT (a service's token is not);
        a 401 when it is one this platform does not take, a 403 when its user is in none
        of the platform's groups."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        issued_by = str(unverified.get("iss", "")).rstrip("/")
        issuer = self.issuers.get(issued_by)
        if issuer is None:
            raise AuthError(
                f"the token's issuer {issued_by or '(none)'!r} is not one this platform takes "
                f"({env_name('oidc_issuers')}: {', '.join(self.issuers) or 'none'})"
            )
        if header.get("alg") not in ALGORITHMS:
            raise AuthError(f"the token is signed with {header.get('alg')!r}, not a public key")
        claims = self._verified(token, issuer, header, unverified)
        found = vos(claims) if _carries_groups(claims) else self._userinfo_vos(token, issuer)
        if claims["sub"] == ADMIN_OWNER:
            raise AuthError(f"a user may not be named {ADMIN_OWNER!r}: that is the admin")
        user = User(
            sub=str(claims["sub"]),
            name=str(claims.get("name") or claims.get("preferred_username") or ""),
            vos=found,
        )
        if self.groups and not user.vos & set(self.groups):
            raise ForbiddenError(
                f"user {user.sub!r} is in none of the VOs this platform admits "
                f"({', '.join(self.groups)}); ask to join one"
            )
        return user

    def _verified(
        self, token: str, issuer: Issuer, header: Mapping[str, Any], unverified: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = issuer.signing_key(token, header)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[str(header["alg"])],
                audience=self.audience or None,
                issuer=str(unverified["iss"]),
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired: get a new one from its issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                f"the token is for another audience (aud {unverified.get('aud')!r}); this "
                f"platform takes tokens for {self.audience!r}"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthError(
                f"the token's signature does not check with {issuer.url}'s keys"
            ) from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:  # TypeError: a key of
            # another kind than the token's algorithm (an ES256 token naming an RSA key)
            raise AuthError(f"the token is not valid: {exc}") from None

    def _userinfo_vos(self, token: str, issuer: Issuer) -> frozenset[str]:
        """The VOs the issuer's userinfo gives for `token` (none without one), cached."""
        if not issuer.userinfo:
            return frozenset()
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            kept = self._userinfo.get(digest)
            if kept is not None and kept[0] > now:
                return kept[1]
        try:
            answer = httpx.get(
                issuer.userinfo, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
            )
            answer.raise_for_status()
            info = answer.json()
            if info.get("sub") != jwt.decode(token, options={"verify_signature": False})["sub"]:
                raise ValueError("its sub is not the token's")  # OIDC Core 5.3.2
            found = vos(info)
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise UnavailableError(
                f"cannot read the user's groups from {issuer.userinfo} ({exc}); try again later"
            ) from None
        expires = float(jwt.decode(token, options={"verify_signature": False}).get("exp", now))
        with self._lock:
            if len(self._userinfo) >= KEPT_USERINFO:
                self._userinfo = {d: v for d, v in self._userinfo.items() if v[0] > now}
                if len(self._userinfo) >= KEPT_USERINFO:
                    self._userinfo.clear()
            self._userinfo[digest] = (expires, found)
        return found
