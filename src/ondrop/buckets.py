"""Buckets, as OSCAR's /system/buckets has them: the folders at the top of a storage
provider (an object store's buckets; on the embedded default, the local store's
folders), with who may see them, and presigned URLs for one object of one.

A bucket a service reads or writes is a service's bucket: it cannot be changed or
deleted here (delete the service first), as OSCAR keeps its services' buckets.
A bucket's owner (who made it), visibility and allowed users decide what a signed-in
user sees and may change (api/routes/buckets.py, access.py's rules); the admin sees
every bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ondrop.errors import (
    ConflictError,
    DefinitionError,
    ForbiddenError,
    InvalidKeyError,
    NotFoundError,
)
from ondrop.fdl.models import ADMIN_OWNER
from ondrop.services import Services
from ondrop.storage import Providers, StorageProvider, check_key
from ondrop.store.base import Store

VISIBILITIES = ("private", "public", "restricted")
OWNER = ADMIN_OWNER  # OSCAR's owner of what the admin makes
META = "bucket:"  # store meta: + provider + "/" + bucket -> {visibility, allowed_users, owner}
SIGNING_KEY = "presign-key"  # store meta: the key presigned URLs of local stores are signed with
PAGE = 1000  # objects in one page of a bucket's listing
EXPIRES = 900  # seconds a presigned URL lasts unless asked (OSCAR's default)
MAX_EXPIRES = 7 * 24 * 3600
OPERATIONS = {"download": "GET", "upload": "PUT"}
COUNTED = 30.0  # seconds a count of a store's objects is reused


@dataclass
class Bucket:
    name: str
    visibility: str = "private"
    allowed_users: list[str] = field(default_factory=list)
    owner: str = OWNER
    services: list[str] = field(default_factory=list)  # the services that use it

    def shown(self) -> dict[str, Any]:
        """OSCAR's MinIOBucket fields."""
        metadata = {"owner_name": "oscar" if self.owner == OWNER else self.owner}
        if self.services:
            metadata["service"] = "true"
            metadata["services"] = ",".join(self.services)
        return {
            "bucket_name": self.name,
            "visibility": self.visibility,
            "allowed_users": self.allowed_users,
            "owner": self.owner,
            "metadata": metadata,
        }


class Buckets:
    def __init__(self, store: Store, providers: Providers, services: Services) -> None:
        self.store = store
        self.providers = providers
        self.services = services
        self._counted: dict[str, tuple[float, tuple[int, int]]] = {}  # provider -> when, counts

    # -- reading ------------------------------------------------------------------------
    def all(self, provider: str) -> list[Bucket]:
        found = self.providers.get(provider)
        return [self._bucket(found, name) for name in found.folders()]

    def get(
        self, provider: str, name: str, page: str = "", limit: int = PAGE
    ) -> tuple[Bucket, list[dict[str, Any]], str]:
        """The bucket, one page of its objects (those after the key `page`), and the key
        the next page starts after ("" at the end)."""
        found = self.providers.get(provider)
        name = self._present(found, name)
        objects: list[dict[str, Any]] = []
        more = ""
        for info in found.list(name):
            if page and info.key <= page:
                continue
            if len(objects) == limit:
                more = objects[-1]["object_name"]
                break
            objects.append(
                {
                    "object_name": info.key.partition("/")[2],
                    "size_bytes": info.size,
                    "last_modified": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.modified)
                    ),
                }
            )
        if more:
            more = f"{name}/{more}"
        return self._bucket(found, name), objects, more

    def summary(self, provider: str) -> tuple[int, int]:
        """How many buckets the provider has, and objects in them: counted again when
        the last count is older than COUNTED seconds (it lists the whole store)."""
        kept = self._counted.get(provider)
        if kept is not None and kept[0] > time.monotonic() - COUNTED:
            return kept[1]
        found = self.providers.get(provider)
        names = found.folders()
        counts = len(names), sum(1 for _ in found.list()) if names else 0
        self._counted[provider] = (time.monotonic(), counts)
        return counts

    # -- changing -----------------------------------------------------------------------
    def create(
        self, provider: str, name: str, visibility: str, allowed: list[str], owner: str = OWNER
    ) -> Bucket:
        found = self.providers.get(provider)
        path = check_key(name.strip(" /"), "bucket_name")
        bucket = path.partition("/")[0]
        if bucket in found.folders():
            raise ConflictError(f"{found.name}: the bucket {bucket!r} exists already")
        _check(visibility, allowed)
        found.ensure_folder(path)
        self._keep(found, Bucket(bucket, visibility or "private", allowed, owner))
        return self._bucket(found, bucket)

    def update(self, provider: str, name: str, visibility: str, allowed: list[str]) -> Bucket:
        found = self.providers.get(provider)
        current = self._existing(found, name)
        _check(visibility, allowed)
        current.visibility = visibility or current.visibility
        current.allowed_users = allowed
        self._keep(found, current)
        return current

    def delete(self, provider: str, name: str) -> int:
        """Delete the bucket and every object in it; how many objects went."""
        found = self.providers.get(provider)
        current = self._existing(found, name)
        gone = found.remove_folder(current.name)
        self.store.set_meta(f"{META}{found.name}/{current.name}", "")
        return gone

    # -- presigned URLs -------------------------------------------------------------------
    def presign(
        self,
        provider: str,
        name: str,
        key: str,
        operation: str,
        expires: int,
        content_type: str,
        base_url: str,
    ) -> dict[str, Any]:
        """OSCAR's presign answer: a URL to download or upload one object of the bucket
        with no other credentials, for `expires` seconds. An object store signs its own
        URLs; a local store's point at this platform, signed with a key of its own."""
        found = self.providers.get(provider)
        bucket = self._present(found, name)
        method = OPERATIONS.get(operation.strip().lower())
        if method is None:
            raise DefinitionError(f"operation: {operation!r} is not one of {', '.join(OPERATIONS)}")
        expires = expires or EXPIRES
        if not 1 <= expires <= MAX_EXPIRES:
            raise DefinitionError(f"expires_in: must be 1 to {MAX_EXPIRES} seconds")
        object_key = key.strip().strip("/")
        full = check_key(f"{bucket}/{object_key}", "object_key")
        from ondrop.storage.s3 import S3Storage  # boto3: only when asked

        if isinstance(found, S3Storage):
            url = found.presign(full, method, expires, content_type)
        else:
            until = int(time.time()) + expires
            signature = self.signature(method, found.name, full, until)
            url = (
                f"{base_url.rstrip('/')}/presigned/{found.name}/{quote(full)}"
                f"?expires={until}&signature={signature}"
            )
        headers = {"Content-Type": content_type} if content_type and method == "PUT" else {}
        return {
            "object_key": object_key,
            "operation": operation.strip().lower(),
            "method": method,
            "url": url,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires)),
            **({"headers": headers} if headers else {}),
        }

    def signature(self, method: str, provider: str, key: str, until: int) -> str:
        secret = self.store.get_meta(SIGNING_KEY) or self.store.first_meta(
            SIGNING_KEY, secrets.token_hex(32)
        )
        message = f"{method}\n{provider}\n{key}\n{until}".encode()
        return hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()

    def check_signature(
        self, method: str, provider: str, key: str, until: int, signature: str
    ) -> None:
        """ForbiddenError unless `signature` was made here for this request, and is
        still good."""
        if (
            not re.fullmatch(r"[0-9a-f]{64}", signature)
            or not self.store.get_meta(SIGNING_KEY)
            or not hmac.compare_digest(
                self.signature(method, provider, key, until).encode(), signature.encode()
            )
        ):
            raise ForbiddenError(
                f"this URL's signature is not one this platform made for {method} of {key!r}"
            )
        if until < time.time():
            raise ForbiddenError("this presigned URL has expired; ask for a new one")

    def find(self, provider: str, name: str) -> Bucket:
        """The bucket (NotFoundError when the provider has no such one)."""
        found = self.providers.get(provider)
        return self._bucket(found, self._present(found, name))

    def owner(self, provider: str, name: str) -> str | None:
        """Who made the bucket through /system/buckets (None: no one did, or no such
        provider)."""
        try:
            found = self.providers.get(provider)
        except NotFoundError:
            return None
        kept = json.loads(self.store.get_meta(f"{META}{found.name}/{name}") or "{}")
        return str(kept["owner"]) if "owner" in kept else None

    # -- helpers --------------------------------------------------------------------------
    def _name(self, name: str) -> str:
        text = name.strip().strip("/")
        if not text or "/" in text:
            raise InvalidKeyError(f"bucket: expected a bucket's name, not {name!r}")
        return check_key(text, "bucket")

    def _present(self, found: StorageProvider, name: str) -> str:
        """The bucket's checked name; NotFoundError when the provider has no such one."""
        bucket = self._name(name)
        if bucket not in found.folders():
            raise NotFoundError(f"{found.name}: no bucket {bucket!r}")
        return bucket

    def _existing(self, found: StorageProvider, name: str) -> Bucket:
        bucket = self._bucket(found, self._present(found, name))
        if bucket.services:
            raise ConflictError(
                f"{found.name}: the bucket {bucket.name!r} belongs to the service(s) "
                f"{', '.join(bucket.services)}; remove or change them first"
            )
        return bucket

    def _bucket(self, found: StorageProvider, name: str) -> Bucket:
        kept = json.loads(self.store.get_meta(f"{META}{found.name}/{name}") or "{}")
        return Bucket(
            name,
            kept.get("visibility", "private"),
            list(kept.get("allowed_users", [])),
            kept.get("owner", OWNER),
            self._users(found, name),
        )

    def _users(self, found: StorageProvider, name: str) -> list[str]:
        using = []
        for service in self.services.all():
            for io in [*service.input, *service.output]:
                if (
                    self.providers.known(io.storage_provider)
                    and self.providers.resolve(io.storage_provider) == found.name
                    and io.path.strip("/").partition("/")[0] == name
                ):
                    using.append(service.name)
                    break
        return using

    def _keep(self, found: StorageProvider, bucket: Bucket) -> None:
        self.store.set_meta(
            f"{META}{found.name}/{bucket.name}",
            json.dumps(
                {
                    "visibility": bucket.visibility,
                    "allowed_users": bucket.allowed_users,
                    "owner": bucket.owner,
                }
            ),
        )


def _check(visibility: str, allowed: list[str]) -> None:
    if visibility and visibility not in VISIBILITIES:
        raise DefinitionError(f"visibility: {visibility!r} is not one of {', '.join(VISIBILITIES)}")
    if not isinstance(allowed, list) or not all(
        isinstance(u, str) and 0 < len(u) <= 255 for u in allowed
    ):
        raise DefinitionError("allowed_users: expected a list of user ids")
