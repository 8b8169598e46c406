"""Whether the platform can do its work now: room on the disks it writes to (the data
folder, local providers' folders); the servers it started say for themselves. /health
and /system/status read it; nothing here blocks or writes.

A file system counts as full while it has less than LOW free (or no free inode), and
also for a while after a write there met ENOSPC: until CLEAR more is free than then (or
a tenth of its size, on a small one), or HOLD seconds without another write meeting it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ondrop.quantity import format_bytes

LOW = 1 << 20  # bytes: less free than this is a full disk
CLEAR = 16 << 20  # bytes freed after a write met a full disk that make it usable again
HOLD = 300.0  # seconds a full disk met by a write counts as full without another one

# (what, folder): "the data folder", DATA; "local.archive's folder", its root
Places = Callable[[], list[tuple[str, Path]]]


@dataclass(frozen=True)
class Usage:
    device: int
    free: int  # bytes this process may still write
    total: int
    inodes_left: bool


def usage(folder: Path) -> Usage | None:
    """The file system `folder` (or its nearest existing parent) lives on."""
    for candidate in (folder, *folder.parents):
        try:
            st = os.statvfs(candidate)
            device = os.stat(candidate).st_dev
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        root = os.geteuid() == 0  # root may write into the blocks kept for it
        blocks = st.f_bfree if root else st.f_bavail
        inodes = st.f_ffree if root else st.f_favail
        return Usage(
            device, blocks * st.f_frsize, st.f_blocks * st.f_frsize, inodes > 0 or not st.f_files
        )
    return None


@dataclass
class _Met:
    free: int  # bytes free just after the write failed
    at: float  # time.monotonic() of the last write that met it


class DiskSpace:
    def __init__(self, places: Places) -> None:
        self.places = places
        self._met: dict[int, _Met] = {}  # device -> the last write that found it full
        self._lock = threading.Lock()

    def met(self, folder: Path) -> None:
        """A write under `folder` found no space left (ENOSPC, EDQUOT)."""
        found = usage(folder)
        if found is not None:
            with self._lock:
                self._met[found.device] = _Met(found.free, time.monotonic())

    def problems(self) -> list[str]:
        """What is full now, each with what to do; empty when every place has room."""
        devices: dict[int, tuple[Usage, list[str]]] = {}
        for what, folder in self.places():
            found = usage(folder)
            if found is not None:
                devices.setdefault(found.device, (found, []))[1].append(what)
        problems = []
        now = time.monotonic()
        for device, (found, names) in devices.items():
            full = found.free < LOW or not found.inodes_left
            with self._lock:
                met = self._met.get(device)
                if met is not None and not full:
                    freed = found.free - met.free
                    if now - met.at > HOLD or freed >= min(CLEAR, found.total // 10):
                        del self._met[device]
                    else:
                        full = True
            if full:
                left = (
                    f"{format_bytes(found.free)} free of {format_bytes(found.total)}"
                    if found.inodes_left
                    else "no file can be made: no inode is left"
                )
                problems.append(
                    f"{' and '.join(names)} {'are' if len(names) > 1 else 'is'} full ({left}): "
                    "free space there; meanwhile uploads answer 507 and jobs that need room "
                    "wait"
                )
        return problems
