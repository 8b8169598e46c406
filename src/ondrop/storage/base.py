"""StorageProvider: the one interface every place that holds files implements.

Keys are relative, slash-separated object names ("photos/in/cat.png"); every key
that comes from outside passes `check_key` before it reaches a provider.
"""

from __future__ import annotations

import builtins
import os
import posixpath
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

from ondrop.errors import InvalidKeyError, StorageError

# Files a provider writes while an upload is under way; never listed, never a key.
TEMP_PREFIX = ".ondrop-"
MAX_KEY_LENGTH = 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str  # changes whenever the content may have changed (etag, size+mtime)
    modified: float  # seconds since the epoch


def check_key(key: str, what: str = "object key") -> str:
    """`key` if it is a safe relative object name, else InvalidKeyError saying why."""
    if not key:
        raise InvalidKeyError(f"{what} is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"{what} is longer than {MAX_KEY_LENGTH} characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(f"{what} {key!r} is not valid UTF-8") from None
    for i, c in enumerate(key):
        if ord(c) < 32 or 127 <= ord(c) < 160:  # C0, DEL and C1: Unicode's control characters
            raise InvalidKeyError(
                f"{what} {key!r} contains the control character U+{ord(c):04X} at position "
                f"{i + 1}; names must be printable"
            )
    if "\\" in key:
        raise InvalidKeyError(f"{what} {key!r} contains a backslash")
    if key.startswith("/"):
        raise InvalidKeyError(f"{what} {key!r} is an absolute path; use a relative one")
    for part in key.split("/"):
        if part in {"", ".", ".."}:
            raise InvalidKeyError(
                f"{what} {key!r} has an empty, '.' or '..' segment; keys are plain relative names"
            )
        if part.startswith(TEMP_PREFIX):
            raise InvalidKeyError(f"{what} {key!r}: names starting with {TEMP_PREFIX} are reserved")
    return key


def check_prefix(path: str, what: str = "path") -> str:
    """A folder-like prefix: '' (the whole provider) or a safe key, without slashes at the ends."""
    stripped = path.strip("/")
    return check_key(stripped, what) if stripped else ""


def join_key(prefix: str, name: str) -> str:
    return posixpath.join(prefix, name) if prefix else name


def under(key: str, prefix: str) -> bool:
    """True when `key` lies inside the folder `prefix` ('' holds everything)."""
    return not prefix or key.startswith(prefix + "/")


class StorageProvider(ABC):
    """A named place files live. Streaming in and out; no whole file in memory."""

    kind: str = ""
    # Objects one caller may put at the same time, from threads of its own: a server that
    # answers several requests at once is worth more than one (S3's flat keys and
    # thread-safe client); a folder is written as fast one at a time.
    concurrent: int = 1

    def __init__(self, name: str) -> None:
        self.name = name  # "local.default", "minio.archive", ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the folder `prefix`, recursively, in key order."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object at `key`, or None when there is none."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A binary stream of the object's content; NotFoundError when there is none."""

    @abstractmethod
    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        """Store `source` at `key` atomically (readers never see half an object)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""

    def get(self, key: str, dest: Path) -> ObjectInfo:
        """Copy the object at `key` to the local file `dest`."""
        info = self.stat(key)
        with self.open(key) as src, dest.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        if info is None:
            raise AssertionError("stat and open disagree")  # pragma: no cover
        return info

    def put_file(self, key: str, path: Path, move: bool = False) -> ObjectInfo:
        """Store the local file `path` at `key`. With `move` the provider may take the file
        itself (the caller no longer needs it) instead of copying it. A link at `path` is
        refused, not followed."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot read {path.name!r}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as source:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(f"{self.name}: {path.name!r} is not a file")
            return self.put(key, source)

    def ensure_folder(self, path: str) -> None:
        """Make the folder `path` exist (a bucket on object stores) so it can be written to
        and listed; applying a service calls it for its inputs and outputs."""

    def folders(self) -> builtins.list[str]:
        """The folders at the top of the provider (an object store's buckets), sorted."""
        return sorted({o.key.partition("/")[0] for o in self.list() if "/" in o.key})

    def remove_folder(self, path: str) -> int:
        """Delete every object under the folder `path`, and the folder itself where the
        provider keeps folders (a bucket); how many objects went."""
        check_key(path)
        gone = 0
        for info in list(self.list(path)):
            self.delete(info.key)
            gone += 1
        return gone

    def close(self) -> None:
        """Release connections; the default has none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
