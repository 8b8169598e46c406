"""`webdav.<id>`: a WebDAV server (dCache, Nextcloud, wsgidav...), through httpx.

`hostname` is OSCAR's setting: a host with an optional base path, https unless it
names its scheme. Uploads stream to a temporary name and are moved into place, so
no reader sees half a file.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import posixpath
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, BinaryIO, cast
from urllib.parse import quote, unquote, urlsplit

import httpx

from ondrop.errors import InvalidKeyError, NotFoundError, StorageError, StorageUnavailableError
from ondrop.storage.base import TEMP_PREFIX, ObjectInfo, StorageProvider, check_key
from ondrop.storage.stream import ResponseStream

DAV = "{DAV:}"
PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    "<d:resourcetype/><d:getcontentlength/><d:getlastmodified/><d:getetag/>"
    "</d:prop></d:propfind>"
)


class WebDAVStorage(StorageProvider):
    kind = "webdav"

    def __init__(
        self, name: str, hostname: str, login: str = "", password: str = "", verify: bool = True
    ) -> None:
        super().__init__(name)
        url = hostname if "://" in hostname else f"https://{hostname}"
        parts = urlsplit(url)
        self.base = parts.path.rstrip("/")  # the server's path to the provider's root
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = httpx.Client(
            base_url=self.origin,
            auth=(login, password) if login else None,
            verify=verify,
            timeout=httpx.Timeout(60.0, connect=5.0),
        )

    def _path(self, key: str) -> str:
        return quote(f"{self.base}/{key}" if key else f"{self.base}/")

    def _request(self, method: str, key: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, self._path(key), **kwargs)
        except httpx.TransportError as exc:
            raise StorageUnavailableError(
                f"{self.name} ({self.origin}): cannot reach the server to {what}: {exc}; is it "
                "running? Jobs wait and retry."
            ) from None
        if response.status_code in (401, 403):
            raise StorageError(
                f"{self.name}: {what}: the server refused the credentials "
                f"(HTTP {response.status_code}); check login and password"
            )
        if response.status_code >= 500:
            raise StorageUnavailableError(
                f"{self.name}: {what}: the server failed (HTTP "
                f"{response.status_code}); jobs wait and retry"
            )
        return response

    def _propfind(self, key: str, depth: str) -> list[tuple[str, bool, ObjectInfo | None]]:
        """(key, is folder, info) of `key` and, with depth 1, its members."""
        response = self._request(
            "PROPFIND",
            key,
            f"list {key!r}",
            content=PROPFIND,
            headers={"Depth": depth, "Content-Type": "application/xml"},
        )
        if response.status_code == 404:
            return []
        if response.status_code != 207:
            raise StorageError(f"{self.name}: list {key!r}: HTTP {response.status_code}")
        try:
            return self._parse(response.content)
        except (ET.ParseError, ValueError, TypeError) as exc:
            raise StorageError(
                f"{self.name}: list {key!r}: the server's answer is not a WebDAV listing ({exc})"
            ) from None

    def _parse(self, content: bytes) -> list[tuple[str, bool, ObjectInfo | None]]:
        found = []
        for item in ET.fromstring(content).iter(f"{DAV}response"):
            href = unquote(urlsplit(item.findtext(f"{DAV}href", "")).path)
            relative = href[len(self.base) :].strip("/") if href.startswith(self.base) else ""
            prop = item.find(f"{DAV}propstat/{DAV}prop")
            if prop is None:
                continue
            folder = prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
            info = None
            if not folder:
                size = int(prop.findtext(f"{DAV}getcontentlength") or 0)
                stamp = prop.findtext(f"{DAV}getlastmodified") or ""
                modified = email.utils.parsedate_to_datetime(stamp).timestamp() if stamp else 0.0
                etag = (prop.findtext(f"{DAV}getetag") or "").strip('"')
                info = ObjectInfo(relative, size, etag or f"{size}-{int(modified)}", modified)
            found.append((relative, folder, info))
        return found

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pending = [prefix]
        while pending:
            folder = pending.pop(0)
            entries = sorted(self._propfind(folder, "1"), key=lambda e: e[0])
            for key, is_folder, info in entries:
                if key == folder or posixpath.basename(key).startswith(TEMP_PREFIX):
                    continue
                if is_folder:
                    pending.append(key)
                elif info is not None:
                    try:
                        check_key(key)
                    except InvalidKeyError:
                        continue
                    yield info

    def stat(self, key: str) -> ObjectInfo | None:
        entries = self._propfind(check_key(key), "0")
        return entries[0][2] if entries and not entries[0][1] else None

    def open(self, key: str) -> BinaryIO:
        request = self.http.build_request("GET", self._path(check_key(key)))
        try:
            response = self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise StorageUnavailableError(
                f"{self.name}: cannot reach the server to read {key!r}: {exc}"
            ) from None
        if response.status_code == 404:
            response.close()
            raise NotFoundError(f"{self.name}: no object {key!r}")
        if response.status_code >= 400:
            response.close()
            error = StorageUnavailableError if response.status_code >= 500 else StorageError
            raise error(f"{self.name}: read {key!r}: HTTP {response.status_code}")
        return cast(BinaryIO, io.BufferedReader(ResponseStream(response), 1 << 20))

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        check_key(key)
        folder = posixpath.dirname(key)
        if folder:
            self.ensure_folder(folder)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}")

        def chunks() -> Iterator[bytes]:
            while chunk := source.read(1 << 20):
                yield chunk

        try:
            response = self._request("PUT", temp, f"write {key!r}", content=chunks())
            if response.status_code not in (200, 201, 204):
                raise StorageError(f"{self.name}: write {key!r}: HTTP {response.status_code}")
            moved = self._request(
                "MOVE",
                temp,
                f"write {key!r}",
                headers={"Destination": self.origin + self._path(key), "Overwrite": "T"},
            )
            if moved.status_code not in (201, 204):
                raise StorageError(
                    f"{self.name}: write {key!r}: MOVE gave HTTP {moved.status_code}"
                )
        except BaseException:
            with contextlib.suppress(Exception):  # no half-written temporary left behind
                self.http.request("DELETE", self._path(temp))
            raise
        info = self.stat(key)
        if info is None:
            raise StorageError(f"{self.name}: wrote {key!r} but cannot find it")
        return info

    def delete(self, key: str) -> None:
        response = self._request("DELETE", check_key(key), f"delete {key!r}")
        if response.status_code not in (200, 204, 404):
            raise StorageError(f"{self.name}: delete {key!r}: HTTP {response.status_code}")

    def ensure_folder(self, path: str) -> None:
        built = ""
        for part in path.strip("/").split("/"):
            built = posixpath.join(built, part) if built else part
            response = self._request("MKCOL", built, f"create folder {built!r}")
            if response.status_code not in (201, 405, 301):  # 405: it exists
                raise StorageError(
                    f"{self.name}: create folder {built!r}: HTTP {response.status_code}"
                )

    def close(self) -> None:
        self.http.close()
