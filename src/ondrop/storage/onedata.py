"""`onedata.<id>`: a space on a Oneprovider (Onedata, EGI DataHub), through its REST API.

The FDL gives OSCAR's three settings: `oneprovider_host` (https unless it names its
scheme), `token` (an access token) and `space` (the space's name, or its id). Keys are
paths inside the space. File ids come from a lookup by path; folders are listed a page
of `children` at a time; content is read in ranges and written in pieces at offsets, to
a temporary name that a rename (CDMI's move) puts into place, so no reader sees half a
file. An object's version is its modification time and size with its file id: a file
put again is a new file id, so it is new work even within the same second.

Written against Onedata's published REST API (21.02 and later, camelCase attributes)
and tested against the test server in tests/support/oneprovider.py, not a real
Oneprovider: docs/storage.md says what to check first against yours.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import httpx

from ondrop.errors import (
    DefinitionError,
    InvalidKeyError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
)
from ondrop.storage.base import TEMP_PREFIX, ObjectInfo, StorageProvider, check_key
from ondrop.storage.stream import ResponseStream

API = "/api/v3/oneprovider"
PAGE = 1000  # children in one listing request, the API's largest page
PIECE = 16 * 1024**2  # bytes in one read (a range) or one write (at an offset)
ATTRIBUTES = ("fileId", "name", "type", "size", "mtime")
WANTED = {"attributes": list(ATTRIBUTES)}
MISSING_ERRNOS = {"enoent", "enotdir"}  # "a/b" where a is a file: no object there either
OCTETS = {"Content-Type": "application/octet-stream"}  # Oneprovider takes content as this only
SETTLE = 1.0  # seconds a file written where it lies must be unchanged before it counts


def version_of(file_id: str, mtime: float, size: int) -> str:
    """An object version from what both a listing and a change record carry."""
    digest = hashlib.blake2s(file_id.encode(), digest_size=6).hexdigest()
    return f"{int(mtime)}-{size}-{digest}"


def _error_id(response: httpx.Response) -> tuple[str, str]:
    """(error id, POSIX errno) of a Onedata error answer; blanks where it says none."""
    try:
        error = response.json().get("error") or {}
        details = error.get("details") or {}
        return str(error.get("id") or ""), str(details.get("errno") or "")
    except (ValueError, AttributeError):
        return "", ""


def _description(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("description") or error.get("id") or "")
    except (ValueError, AttributeError):
        return response.text[:200]


class _Ranges(io.RawIOBase):
    """A file's content read a range at a time: large files never ride one request."""

    def __init__(self, provider: OnedataStorage, file_id: str, size: int, key: str) -> None:
        self._provider, self._file_id, self._size, self._key = provider, file_id, size, key
        self._at = 0
        self._part: ResponseStream | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._at < self._size:
            if self._part is None:
                self._part = self._provider._range(self._file_id, self._at, self._key)
            n = self._part.readinto(buffer)
            if n:
                self._at += n
                return n
            self._part.close()
            self._part = None
        return 0

    def close(self) -> None:
        if self._part is not None:
            self._part.close()
        super().close()


class OnedataStorage(StorageProvider):
    kind = "onedata"

    def __init__(
        self,
        name: str,
        host: str,
        token: str,
        space: str,
        verify: bool = True,
        settle: float = SETTLE,
    ) -> None:
        super().__init__(name)
        if not host:
            raise DefinitionError(f"storage provider {name!r}: oneprovider_host is required")
        if not space:
            raise DefinitionError(f"storage provider {name!r}: space is required")
        self.origin = (host if "://" in host else f"https://{host}").rstrip("/")
        self.space = space
        self.settle = settle
        self._token, self._verify = token, verify
        self.http = self.client(60.0)
        self._space_found: tuple[str, str] | None = None  # (id, name)
        self._space_lock = threading.Lock()

    def client(self, read_timeout: float) -> httpx.Client:
        """A client of the Oneprovider: the provider's own, or one of its own for a
        long-lived stream (the changes), which closing stops."""
        return httpx.Client(
            base_url=self.origin,
            headers={"X-Auth-Token": self._token},
            verify=self._verify,
            timeout=httpx.Timeout(read_timeout, connect=5.0),
        )

    # -- requests -------------------------------------------------------------------
    def request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """The answer to one request; the token refused, the provider unreachable or failing
        are errors that say so (StorageUnavailableError: jobs wait and retry)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(what, exc) from None
        return self.checked(response, what)

    def unreachable(self, what: str, exc: Exception) -> StorageUnavailableError:
        return StorageUnavailableError(
            f"{self.name} ({self.origin}): cannot reach the Oneprovider to {what}: {exc}; is "
            "it running? Jobs wait and retry."
        )

    def checked(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code == 401:
            response.read()
            raise StorageError(
                f"{self.name}: {what}: the Oneprovider refused the token (HTTP 401: "
                f"{_description(response)}); check the provider's token"
            )
        if response.status_code >= 500:
            response.read()
            raise StorageUnavailableError(
                f"{self.name}: {what}: the Oneprovider failed (HTTP {response.status_code}); "
                "jobs wait and retry"
            )
        return response

    def _failed(self, response: httpx.Response, what: str) -> StorageError:
        if response.status_code == 403:
            return StorageError(
                f"{self.name}: {what}: the token does not allow it (HTTP 403: "
                f"{_description(response)}); check its access to space {self.space!r}"
            )
        return StorageError(
            f"{self.name}: {what}: HTTP {response.status_code}: {_description(response)}"
        )

    @staticmethod
    def _missing(response: httpx.Response) -> bool:
        if response.status_code == 404:
            return True
        return response.status_code == 400 and _error_id(response)[1] in MISSING_ERRNOS

    # -- the space and its files --------------------------------------------------------
    @property
    def space_id(self) -> str:
        """The space's id, looked up by its name (or given as the id) once."""
        return self._space()[0]

    @property
    def space_name(self) -> str:
        """The name paths in the space start with."""
        return self._space()[1]

    def _space(self) -> tuple[str, str]:
        with self._space_lock:
            if self._space_found is None:
                what = f"find space {self.space!r}"
                response = self.request("GET", f"{API}/spaces", what)
                if response.status_code != 200:
                    raise self._failed(response, what)
                spaces = response.json()
                for space in spaces:
                    if self.space in (space.get("name"), space.get("spaceId")):
                        self._space_found = (str(space["spaceId"]), str(space["name"]))
                        break
                else:
                    seen = ", ".join(sorted(str(s.get("name")) for s in spaces)) or "none"
                    raise StorageError(
                        f"{self.name}: space {self.space!r} does not exist on {self.origin}, "
                        f"or the token has no access to it; the spaces it sees: {seen}"
                    )
            return self._space_found

    def key_of(self, path: str) -> str | None:
        """The key of a path as the provider writes it ("/space id/a/b", the canonical
        form, or "/space name/a/b"), None when it lies outside the space."""
        for prefix in (f"/{self.space_id}/", f"/{self.space_name}/"):
            if path.startswith(prefix):
                return path[len(prefix) :]
        return None

    def file_id(self, key: str) -> str | None:
        """The id of the file or folder at `key` ('' is the space), None when there is none."""
        if not key:
            return self.space_id
        path = quote(f"{self.space_name}/{key}")  # a wrong space is named as such
        response = self.request("POST", f"{API}/lookup-file-id/{path}", f"look up {key!r}")
        if self._missing(response):
            return None
        if response.status_code != 200:
            raise self._failed(response, f"look up {key!r}")
        return str(response.json()["fileId"])

    def attributes(self, file_id: str, what: str) -> dict[str, Any] | None:
        # In the body, as Onedata's own client asks since 21.02.5: the `attribute` query
        # parameter is the deprecated one, which knows only the old snake_case names.
        response = self.request("GET", f"{API}/data/{file_id}", what, json=WANTED)
        if self._missing(response):
            return None
        if response.status_code != 200:
            raise self._failed(response, what)
        return cast(dict[str, Any], response.json())

    @staticmethod
    def is_folder(attributes: dict[str, Any]) -> bool:
        return str(attributes.get("type", "")).upper() == "DIR"

    @staticmethod
    def info(key: str, attributes: dict[str, Any]) -> ObjectInfo:
        size, mtime = int(attributes.get("size") or 0), float(attributes.get("mtime") or 0)
        return ObjectInfo(key, size, version_of(str(attributes["fileId"]), mtime, size), mtime)

    # -- StorageProvider ------------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        top = self.file_id(prefix)
        found: list[ObjectInfo] = []
        pending = [(prefix, top)] if top is not None else []
        while pending:
            folder, folder_id = pending.pop()
            for attributes in self._children(folder, folder_id):
                name = str(attributes.get("name", ""))
                if not name or name.startswith(TEMP_PREFIX) or "/" in name:
                    continue
                key = posixpath.join(folder, name) if folder else name
                if self.is_folder(attributes):
                    pending.append((key, str(attributes["fileId"])))
                    continue
                try:
                    check_key(key)
                except InvalidKeyError:
                    continue
                found.append(self.info(key, attributes))
        yield from sorted(found, key=lambda info: info.key)

    def _children(self, folder: str, folder_id: str | None) -> Iterator[dict[str, Any]]:
        what = f"list {folder or 'the space'!r}"
        token: str | None = None
        while folder_id is not None:
            params: dict[str, str | int] = {"limit": PAGE}
            if token:
                params["token"] = token
            response = self.request(
                "GET", f"{API}/data/{folder_id}/children", what, params=params, json=WANTED
            )
            if self._missing(response):
                return  # gone meanwhile, or a file: nothing under it
            if response.status_code != 200:
                raise self._failed(response, what)
            page = response.json()
            yield from page.get("children") or []
            token = page.get("nextPageToken")
            if page.get("isLast", True) or not token:
                return

    def _file(self, key: str, what: str) -> tuple[str, dict[str, Any]] | None:
        """The id and attributes of the file at `key`; None when there is none (a folder
        is none)."""
        file_id = self.file_id(check_key(key))
        attributes = None if file_id is None else self.attributes(file_id, what)
        if file_id is None or attributes is None or self.is_folder(attributes):
            return None
        return file_id, attributes

    def stat(self, key: str) -> ObjectInfo | None:
        found = self._file(key, f"read {key!r}")
        return None if found is None else self.info(key, found[1])

    def open(self, key: str) -> BinaryIO:
        return self._open(key)[0]

    def get(self, key: str, dest: Path) -> ObjectInfo:
        """As StorageProvider.get, with the file looked up once for both its content and
        its version (a stage-in's requests, halved)."""
        source, info = self._open(key)
        with source, dest.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        return info

    def _open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        found = self._file(key, f"read {key!r}")
        if found is None:
            raise NotFoundError(f"{self.name}: no object {key!r}")
        file_id, attributes = found
        info = self.info(key, attributes)
        reader = io.BufferedReader(_Ranges(self, file_id, info.size, key), 1 << 20)
        return cast(BinaryIO, reader), info

    def _range(self, file_id: str, start: int, key: str) -> ResponseStream:
        what = f"read {key!r}"
        headers = {"Range": f"bytes={start}-{start + PIECE - 1}"}
        request = self.http.build_request("GET", f"{API}/data/{file_id}/content", headers=headers)
        try:
            response = self.checked(self.http.send(request, stream=True), what)
        except httpx.TransportError as exc:
            raise self.unreachable(what, exc) from None
        if response.status_code == 206 or (response.status_code == 200 and start == 0):
            return ResponseStream(response)
        if response.status_code == 200:
            response.close()
            raise StorageError(
                f"{self.name}: {what}: the Oneprovider ignored the Range header; ondrop reads "
                "large files in ranges"
            )
        response.read()
        if self._missing(response):
            raise NotFoundError(f"{self.name}: {key!r} is gone")
        raise self._failed(response, what)

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        check_key(key)
        folder = posixpath.dirname(key)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        what = f"write {key!r}"
        created = self._create(temp, "REG", what, source.read(PIECE))
        if created.status_code not in (200, 201):
            raise self._failed(created, what)
        file_id = str(created.json()["fileId"])
        try:
            offset = PIECE
            while piece := source.read(PIECE):
                wrote = self.request(
                    "PUT",
                    f"{API}/data/{file_id}/content",
                    what,
                    params={"offset": offset},
                    content=piece,
                    headers=OCTETS,
                )
                if wrote.status_code not in (200, 201, 204):
                    raise self._failed(wrote, what)
                offset += len(piece)
            self._move(temp, key, what)
        except BaseException:
            with contextlib.suppress(Exception):  # no half-written temporary left behind
                self.http.request("DELETE", f"{API}/data/{file_id}")
            raise
        attributes = self.attributes(file_id, what)
        if attributes is None:
            raise StorageError(f"{self.name}: wrote {key!r} but cannot find it")
        return self.info(key, attributes)

    def _create(self, path: str, kind: str, what: str, content: bytes = b"") -> httpx.Response:
        """Make the file (with `content`) or folder at `path`, and the folders above it."""
        return self.request(
            "PUT",
            f"{API}/data/{self.space_id}/path/{quote(path)}",
            what,
            params={"type": kind, "create_parents": "true"},
            content=content,
            headers=OCTETS if content else None,
        )

    def _move(self, source: str, dest: str, what: str) -> None:
        """Rename `source` to `dest` in the space, replacing a file there (CDMI's move)."""
        space = self.space_name
        moved = self.request(
            "PUT",
            f"/cdmi/{quote(space)}/{quote(dest)}",
            what,
            headers={
                "X-CDMI-Specification-Version": "1.1.1",
                "Content-Type": "application/cdmi-object",
            },
            json={"move": f"{space}/{source}"},
        )
        if moved.status_code not in (200, 201, 204):
            raise self._failed(moved, f"{what} (moving it into place)")

    def delete(self, key: str) -> None:
        found = self._file(key, f"delete {key!r}")
        if found is None:
            return
        response = self.request("DELETE", f"{API}/data/{found[0]}", f"delete {key!r}")
        if response.status_code not in (200, 204) and not self._missing(response):
            raise self._failed(response, f"delete {key!r}")

    def ensure_folder(self, path: str) -> None:
        path = path.strip("/")
        self.space_id  # noqa: B018  (a wrong token or space is said here, when applying)
        if not path:
            return
        what = f"create folder {path!r}"
        response = self._create(path, "DIR", what)
        if response.status_code in (200, 201) or _error_id(response)[1] == "eexist":
            return
        raise self._failed(response, what)

    def close(self) -> None:
        self.http.close()
