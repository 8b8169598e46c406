"""`memory.<id>`: objects in a dict. The test double of StorageProvider."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ondrop.errors import NotFoundError, StorageError, StorageUnavailableError
from ondrop.storage.base import ObjectInfo, StorageProvider, check_key, under


class MemoryStorage(StorageProvider):
    kind = "memory"

    def __init__(self, name: str = "memory.default") -> None:
        super().__init__(name)
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()
        self.fail_with: str | None = None  # set to make every call raise StorageError
        self.down = False  # set to make every call raise StorageUnavailableError

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailableError(f"{self.name}: the store is down")
        if self.fail_with:
            raise StorageError(f"{self.name}: {self.fail_with}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._check()
        with self._lock:
            infos = [info for key, (_, info) in sorted(self._objects.items()) if under(key, prefix)]
        yield from infos

    def stat(self, key: str) -> ObjectInfo | None:
        self._check()
        entry = self._objects.get(check_key(key))
        return entry[1] if entry else None

    def open(self, key: str) -> BinaryIO:
        self._check()
        entry = self._objects.get(check_key(key))
        if entry is None:
            raise NotFoundError(f"{self.name}: no object {key!r}")
        return io.BytesIO(entry[0])

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        self._check()
        data = source.read()
        with self._lock:
            info = ObjectInfo(check_key(key), len(data), str(next(self._versions)), time.time())
            self._objects[key] = (data, info)
        return info

    def delete(self, key: str) -> None:
        self._check()
        with self._lock:
            self._objects.pop(check_key(key), None)
