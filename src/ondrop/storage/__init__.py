"""Storage providers by name: the platform's own, and those services declare.

`minio.default` is "the platform's default store", as in OSCAR's FDL; on the
embedded default it is the same folder as `local.default`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ondrop.errors import DefinitionError, NotFoundError
from ondrop.storage.base import ObjectInfo, StorageProvider, check_key, check_prefix
from ondrop.storage.local import LocalStorage
from ondrop.storage.memory import MemoryStorage

# Provider types this platform can serve, by FDL type name.
AVAILABLE = ("local", "minio", "s3", "webdav", "onedata")


def canonical(name: str) -> str:
    kind, _, ident = name.partition(".")
    return f"{kind}.{ident or 'default'}"


class Providers:
    """name -> StorageProvider; aliases resolve to the same object."""

    def __init__(self, providers: Mapping[str, StorageProvider]) -> None:
        self._by_name = {canonical(k): v for k, v in providers.items()}
        self._configs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> StorageProvider:
        try:
            return self._by_name[canonical(name)]
        except KeyError:
            raise NotFoundError(
                f"storage provider {name!r} is not defined; define it under storage_providers "
                f"or use one of: {', '.join(sorted(self._by_name))}"
            ) from None

    def known(self, name: str) -> bool:
        return canonical(name) in self._by_name

    def resolve(self, name: str) -> str:
        """The name events from this provider carry (aliases give their target's name)."""
        return self.get(name).name

    def all(self) -> list[StorageProvider]:
        unique = {id(p): p for p in self._by_name.values()}
        return list(unique.values())

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def check(self, name: str, declared: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """DefinitionError unless `name` is known here or declared in a form this platform
        runs; the platform's own providers cannot be redefined."""
        name = canonical(name)
        kind, _, ident = name.partition(".")
        config = declared.get(kind, {}).get(ident)
        with self._lock:
            if config is None:
                if name in self._by_name:
                    return
                raise DefinitionError(
                    f"storage provider {name!r} is not defined: add it under storage_providers "
                    f"or use one of: {', '.join(sorted(self._by_name))}"
                )
            if name in self._by_name and name not in self._configs:
                raise DefinitionError(
                    f"storage provider {name!r} is the platform's own; it cannot be redefined"
                )
            if kind not in AVAILABLE:
                raise DefinitionError(
                    f"storage provider {name!r}: type {kind!r} is not available on this platform "
                    f"yet (available: {', '.join(AVAILABLE)})"
                )

    def candidate(self, name: str, config: Mapping[str, Any] | None) -> StorageProvider:
        """The provider `name` as `config` declares it: the registered one when its settings
        are the same, else a new one that is not registered (see register)."""
        name = canonical(name)
        with self._lock:
            if config is None or self._configs.get(name) == dict(config):
                return self.get(name)
        return build(name, config)

    def register(self, name: str, provider: StorageProvider, config: Mapping[str, Any]) -> None:
        """Make `provider` the one `name` means (replacing a declaration with other
        settings, whose connections are closed)."""
        name = canonical(name)
        with self._lock:
            old = self._by_name.get(name)
            if old is provider:
                return
            self._by_name[name] = provider
            self._configs[name] = dict(config)
        if old is not None:
            old.close()

    def configs(self) -> dict[str, dict[str, Any]]:
        """The declared providers' configurations (name -> settings), credentials included."""
        with self._lock:
            return {name: dict(config) for name, config in self._configs.items()}

    def close(self) -> None:
        for provider in self.all():
            provider.close()


def build(name: str, config: Mapping[str, Any]) -> StorageProvider:
    kind = name.partition(".")[0]
    if kind == "local":
        path = Path(str(config.get("path", "")))
        if not path.is_absolute():
            raise DefinitionError(f"storage provider {name!r}: path must be an absolute folder")
        return LocalStorage(name, path)
    if kind == "memory":
        return MemoryStorage(name)
    if kind in ("minio", "s3"):
        from ondrop.storage.s3 import S3Storage

        return S3Storage(
            name,
            endpoint=str(config.get("endpoint") or ""),
            access_key=str(config.get("access_key") or ""),
            secret_key=str(config.get("secret_key") or ""),
            region=str(config.get("region") or ""),
            verify=bool(config.get("verify", True)),
        )
    if kind == "webdav":
        from ondrop.storage.webdav import WebDAVStorage

        return WebDAVStorage(
            name,
            hostname=str(config.get("hostname") or ""),
            login=str(config.get("login") or ""),
            password=str(config.get("password") or ""),
            verify=bool(config.get("verify", True)),
        )
    if kind == "onedata":
        from ondrop.storage.onedata import OnedataStorage

        return OnedataStorage(
            name,
            host=str(config.get("oneprovider_host") or ""),
            token=str(config.get("token") or ""),
            space=str(config.get("space") or ""),
            verify=bool(config.get("verify", True)),
            settle=float(config.get("settle", 1.0)),
        )
    raise DefinitionError(f"storage provider {name!r}: type {kind!r} is not available")


__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "Providers",
    "StorageProvider",
    "build",
    "canonical",
    "check_key",
    "check_prefix",
]
