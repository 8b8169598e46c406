"""Linux's inotify, read directly: one file descriptor, events read in batches.

A thin binding (ctypes to the C library) so that the folder watcher costs one thread
and one read per batch of events, however many files land at once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

MODIFY = 0x2
CLOSE_WRITE = 0x8
CLOSE_NOWRITE = 0x10
OPEN = 0x20
MOVED_FROM = 0x40
MOVED_TO = 0x80
CREATE = 0x100
DELETE_SELF = 0x400
MOVE_SELF = 0x800
Q_OVERFLOW = 0x4000
IGNORED = 0x8000
ONLYDIR = 0x1000000
DONT_FOLLOW = 0x2000000
EXCL_UNLINK = 0x4000000
ISDIR = 0x40000000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then the name, NUL-padded
_BUFFER = 1 << 16


@dataclass(frozen=True)
class InotifyEvent:
    wd: int  # the watch it came from; -1 for a queue overflow
    mask: int
    name: str  # within the watched folder; '' for the folder itself


class InotifyError(OSError):
    pass


def available() -> bool:
    """Whether this system has inotify (Linux); elsewhere local folders are polled."""
    try:
        return hasattr(ctypes.CDLL(None), "inotify_init1")
    except OSError:
        return False


class Inotify:
    def __init__(self) -> None:
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            init = self._libc.inotify_init1
        except (OSError, AttributeError):
            raise InotifyError(errno.ENOSYS, "inotify is not available on this system") from None
        fd = init(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            code = ctypes.get_errno()
            raise InotifyError(code, f"cannot start inotify: {os.strerror(code)}")
        self.fd: int = fd

    def add(self, path: str, mask: int) -> int:
        """Watch the folder `path` (never through a link); returns the watch's id."""
        wd: int = self._libc.inotify_add_watch(
            self.fd, os.fsencode(path), mask | ONLYDIR | DONT_FOLLOW
        )
        if wd < 0:
            code = ctypes.get_errno()
            raise InotifyError(code, f"cannot watch {path}: {os.strerror(code)}", path)
        return wd

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch already gone

    def read(self) -> list[InotifyEvent]:
        """The events queued now (none when there are none: the descriptor never blocks)."""
        try:
            data = os.read(self.fd, _BUFFER)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset < len(data):
            wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + size].rstrip(b"\0")
            offset += size
            events.append(InotifyEvent(wd, mask, os.fsdecode(name)))
        return events

    def close(self) -> None:
        os.close(self.fd)
