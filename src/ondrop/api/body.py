"""Request bodies to disk, streamed, within the upload limit (413 before the disk fills)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fastapi import Request

from ondrop.errors import TooLargeError
from ondrop.quantity import format_bytes


async def receive(request: Request, limit: int, folder: Path) -> Path:
    """The body, written to a new file in `folder` that only the platform may read; the
    caller removes it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(
            f"the body is {format_bytes(int(declared))}, over the limit of {format_bytes(limit)} "
            "(setting ONDROP_MAX_UPLOAD)"
        )
    path = folder / f"upload-{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    received = 0
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
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
