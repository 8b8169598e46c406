"""Invocation bodies, one file each in the data folder, kept until their job succeeded.

A body is written and synced before its event is recorded, so an acknowledged
invocation survives a crash; the store holds only the file's name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Set
from pathlib import Path


class Payloads:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def adopt(self, path: Path) -> str:
        """Move the file at `path` (on the same file system) in, durably; returns its name."""
        name = uuid.uuid4().hex
        with path.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(path, self.folder / name)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    def path(self, name: str) -> Path:
        return self.folder / Path(name).name

    def discard(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def keep_only(self, names: Set[str], older_than: float | None = None) -> int:
        """Remove every body not in `names` (start-up), or, with `older_than` (seconds
        since the epoch), those of them last changed before it (a folder shared with other
        control planes, which may be saving one now); returns how many went."""
        removed = 0
        for entry in self.folder.iterdir():
            if entry.name in names:
                continue
            if older_than is not None and _changed(entry) >= older_than:
                continue
            entry.unlink(missing_ok=True)
            removed += 1
        return removed


def _changed(path: Path) -> float:
    """When `path` last changed; now when it is gone meanwhile (kept)."""
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")
