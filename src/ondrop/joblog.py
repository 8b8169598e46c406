"""A job's log: what its script printed (stdout and stderr), read from the file its
runtime writes, never through a link or FIFO the job put in its place, with the service's
secrets hidden. Read whole once the script has ended (`read_log`, what the store keeps),
or as it grows while it runs (`LiveLog`, what `ondrop logs --follow` streams).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

LOG_LIMIT = 1 << 20  # bytes of a job's output kept in the store (the head and the tail)
NOT_A_LOG = "[the job replaced its log with something that is not a file]"
# A file the job may have replaced: never through a link, never waiting on a FIFO.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
HIDDEN = "***"  # what a secret's value is shown as
SECRET_MIN = 4  # characters: shorter values are hidden nowhere (they would hide too much)
LIVE_READ = 1 << 16  # bytes read from a running job's log at a time
LINE_MAX = 1 << 18  # bytes of a line without its end that are given as they are


def read_log(path: Path) -> str:
    """The job's log (its head and tail when long)."""
    try:
        fd = os.open(path, _FILE)
    except FileNotFoundError:
        return ""
    except OSError:
        return NOT_A_LOG
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return NOT_A_LOG
        size = info.st_size
        if size <= LOG_LIMIT:
            data = f.read()
        else:
            head = f.read(LOG_LIMIT // 16)
            f.seek(size - (LOG_LIMIT - len(head)))
            tail = f.read()
            skipped = size - len(head) - len(tail)
            data = head + f"\n[... {skipped} bytes of output left out ...]\n".encode() + tail
    return data.decode("utf-8", errors="replace")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret's value hidden, the longest first."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) >= SECRET_MIN:
            text = text.replace(value, HIDDEN)
    return text


class LiveLog:
    """The log of a script that runs, read as it grows: whole lines only, each with the
    secrets hidden as in the stored log (a value split across two reads is still found).
    Reads the one file it was opened on, whatever the job does to the name after."""

    def __init__(self, fd: int, secrets: Iterable[str]) -> None:
        self._fd = fd
        self._secrets = tuple(secrets)
        self._partial = b""
        self._offset = 0
        self._end: int | None = None  # where the script's output ended, once it has

    def end(self) -> None:
        """The script has ended: what it wrote is all there is. Nothing past this is read
        (its folder, this file with it, goes to another job next)."""
        with contextlib.suppress(OSError):  # closed by its reader meanwhile: unread
            if self._fd >= 0:
                self._end = os.fstat(self._fd).st_size

    @classmethod
    def open(cls, path: Path, secrets: Iterable[str]) -> LiveLog | None:
        """The log at `path`, or None when it is not a regular file (gone, or replaced)."""
        try:
            fd = os.open(path, _FILE)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return cls(fd, secrets)

    def read(self, limit: int = LOG_LIMIT) -> str:
        """The whole lines written since the last read, from at most `limit` bytes more
        of the file (the rest on the next); "" when none is."""
        chunks = [self._partial]
        taken = 0
        while taken < limit:
            want = min(LIVE_READ, limit - taken)
            if self._end is not None:
                want = min(want, self._end - self._offset)
            chunk = os.pread(self._fd, want, self._offset) if want > 0 else b""
            if not chunk:
                break
            chunks.append(chunk)
            taken += len(chunk)
            self._offset += len(chunk)
        data = b"".join(chunks)
        cut = len(data) if len(data) - data.rfind(b"\n") > LINE_MAX else data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return redact(data[:cut].decode("utf-8", errors="replace"), self._secrets)

    def rest(self) -> str:
        """The end of the last line, not ended yet (what `read` holds back)."""
        partial, self._partial = self._partial, b""
        return redact(partial.decode("utf-8", errors="replace"), self._secrets)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
