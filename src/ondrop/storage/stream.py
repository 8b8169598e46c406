"""ResponseStream: a streaming httpx response read as a binary file object, so that a
provider on HTTP (WebDAV, Onedata) hands out content without holding it in memory."""

from __future__ import annotations

import io
from typing import Any

import httpx


class ResponseStream(io.RawIOBase):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_bytes(1 << 20)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._left:
            self._left = next(self._chunks, b"")
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        self._response.close()
        super().close()
