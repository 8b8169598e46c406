"""Request bodies to disk, streamed, within the upload limit (413 before the disk fills),
and 507 when the disk is full (the client still gets its answer: the rest of the body is
read and dropped first)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fastapi import Request

from ondrop.errors import DiskFullError, TooLargeError, disk_full
from ondrop.quantity import format_bytes


def data_full(what: str, folder: Path, exc: BaseException | None = None) -> DiskFullError:
    """The error for a write of the platform's own (a body, an invocation's input) into the
    data folder that found no space left."""
    why = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
    return DiskFullError(
        f"the data folder is full: {what} could not be written{why}; free space in the "
        "data folder (GET /system/status says what is full), then send it again",
        folder,
    )


def free_space(folder: Path) -> int | None:
    """Bytes this process may still write in `folder`'s file system; None if unknown."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


async def _drain(request: Request, limit: int, received: int) -> None:
    """Read what is left of the body and drop it, up to `limit`: a client that is still
    sending would otherwise miss the answer when the connection closes under it."""
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            return


async def receive(request: Request, limit: int, folder: Path) -> Path:
    """The body, written to a new file in `folder` (in the data folder) that only the
    platform may read; the caller removes it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(
            f"the body is {format_bytes(int(declared))}, over the limit of {format_bytes(limit)} "
            "(setting ONDROP_MAX_UPLOAD)"
        )
    room = free_space(folder)
    if declared and declared.isdigit() and room is not None and int(declared) > room:
        # Refused before a byte is written: a half-written body would fill the disk for
        # everyone else (the store, the jobs).
        await _drain(request, limit, 0)
        raise DiskFullError(
            f"the data folder has no room for the body ({format_bytes(int(declared))}, "
            f"{format_bytes(room)} free); free space in the data folder, or send less"
        )
    path = folder / f"upload-{uuid.uuid4().hex}"
    received = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if not disk_full(exc):
            raise
        await _drain(request, limit, received)
        raise data_full("the body", folder, exc) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLargeError(
                        f"the body is over the limit of {format_bytes(limit)} "
                        "(setting ONDROP_MAX_UPLOAD)"
                    )
                out.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if not disk_full(exc):
            raise
        await _drain(request, limit, received)
        raise data_full("the body", folder, exc) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
