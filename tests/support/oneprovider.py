"""An in-memory Oneprovider (Onedata's storage server) for the tests: the parts of its REST
API that ondrop and Onedata's own REST client (onedatafilerestclient) use, with the
changes stream, CDMI's move and Onezone's token scope, on a free loopback port.

A tree model (spaces of files and folders, each mutation logged as change records with a
per-space sequence number) behind one lock, and a request handler over it. Test helpers
act like another writer on the provider. Written from the published API description;
`python -m tests.support.oneprovider --space NAME --token T` serves one by hand.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import errno
import functools
import json
import os
import secrets
import select
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import InitVar, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PROVIDER_API = "/api/v3/oneprovider"
ONEZONE_API = "/api/v3/onezone"
MAX_LIMIT = 1000
DOCS: dict[str, tuple[str, ...]] = {  # the changes stream's doc types and their fields
    "fileMeta": ("name", "type", "mode", "owner", "provider_id", "shares", "deleted"),
    "fileLocation": ("provider_id", "storage_id", "size", "space_id", "storage_file_created"),
    "times": ("atime", "mtime", "ctime"),
}
DEFAULT_ATTRIBUTES = (
    *("fileId", "parentFileId", "name", "posixPermissions", "atime", "mtime", "ctime"),
    *("type", "size", "directShareIds", "index", "displayGid", "displayUid", "ownerUserId"),
    *("originProviderId", "hardlinkCount", "path"),
)
ATTRIBUTES = frozenset(
    (*DEFAULT_ATTRIBUTES, "creationTime", "activePermissionsType", "hasCustomMetadata")
)
# The deprecated `attribute` query parameter takes the old snake_case names (and answers
# with them); the current camelCase ones only come in `attributes`, as Oneprovider does.
SNAKE_CASE = {
    "file_id": "fileId",
    "parent_id": "parentFileId",
    "name": "name",
    "mode": "posixPermissions",
    "atime": "atime",
    "mtime": "mtime",
    "ctime": "ctime",
    "type": "type",
    "size": "size",
    "shares": "directShareIds",
    "index": "index",
    "storage_group_id": "displayGid",
    "storage_user_id": "displayUid",
    "owner_id": "ownerUserId",
    "provider_id": "originProviderId",
    "hardlinks_count": "hardlinkCount",
}


def _now() -> int:
    return int(time.time())


def _hex_rev(n: int) -> str:
    return f"{n}-{secrets.token_hex(16)}"


class PosixError(Exception):
    """A failed file operation, answered as Onedata's POSIX error (HTTP 400)."""

    def __init__(self, code: int) -> None:
        super().__init__(errno.errorcode[code].lower())
        self.code, self.name = code, errno.errorcode[code].lower()


@contextmanager
def _as_os_error() -> Iterator[None]:
    """The helpers raise what os would: FileNotFoundError, FileExistsError..."""
    try:
        yield
    except PosixError as e:
        raise OSError(e.code, os.strerror(e.code)) from None


# -- the model ---------------------------------------------------------------------------
@dataclass(eq=False)
class Node:
    id: str
    name: str
    type: str  # "REG" | "DIR"
    parent: Node | None
    space: Space
    mode: str
    now: InitVar[int]
    content: bytearray = field(default_factory=bytearray)
    children: dict[str, Node] = field(default_factory=dict)
    deleted: bool = False
    revs: dict[str, tuple[int, str]] = field(default_factory=dict)  # doc type -> (n, rev)

    def __post_init__(self, now: int) -> None:
        self.atime = self.mtime = self.ctime = self.created = now
        self.revs = {doc: (1, _hex_rev(1)) for doc in DOCS}

    @property
    def path(self) -> str:
        names, node = [], self
        while node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(["", self.space.name, *reversed(names)])

    @property
    def size(self) -> int | None:
        return len(self.content) if self.type == "REG" else None


@dataclass(frozen=True)
class Change:
    """A snapshot of a file taken when one of its docs changed."""

    seq: int
    file_id: str
    path: str
    doc: str  # the doc type that changed
    deleted: bool
    revs: dict[str, str]  # doc type -> its revision then
    fields: dict[str, dict[str, Any]]  # doc type -> each field's value then


class Space:
    def __init__(self, space_id: str, name: str, root_id: str) -> None:
        self.id, self.name = space_id, name
        self.root = Node(root_id, name, "DIR", None, self, "775", _now())
        self.changes: list[Change] = []


def _check_name(name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise PosixError(errno.EINVAL)
    return name


def _names(path: str) -> list[str]:
    """The names in a path relative to a folder ("a/b.txt")."""
    return [_check_name(name) for name in path.split("/") if name]


class Tree:
    """Every space's files; callers hold `lock` (or `changed`, its condition)."""

    def __init__(self) -> None:
        self.provider_id, self.user_id = secrets.token_hex(16), secrets.token_hex(16)
        self.storage_id = secrets.token_hex(16)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # wakes the change streams
        self.spaces: dict[str, Space] = {}
        self.nodes: dict[str, Node] = {}
        self.used: set[str] = set()  # ids are never reused

    def new_id(self) -> str:
        while (file_id := "0000" + secrets.token_hex(20)) in self.used:
            pass
        self.used.add(file_id)
        return file_id

    def add_space(self, name: str) -> Space:
        space = Space(secrets.token_hex(16), name, self.new_id())
        self.spaces[space.id] = space
        self.nodes[space.root.id] = space.root
        return space

    def space(self, spec: str) -> Space | None:
        """A space by its name, `name@id` or id."""
        name, _, space_id = spec.partition("@")
        for space in self.spaces.values():
            if (space.name == name and space_id in ("", space.id)) or space.id == spec:
                return space
        return None

    def find(self, file_id: str) -> Node | None:
        """A file by its id; a space's id names its root."""
        space = self.spaces.get(file_id)
        return space.root if space is not None else self.nodes.get(file_id)

    def record(self, node: Node, doc: str, bump: bool = True) -> None:
        if bump:
            n = node.revs[doc][0] + 1
            node.revs[doc] = (n, _hex_rev(n))
        provider = {"provider_id": self.provider_id}
        fields: dict[str, dict[str, Any]] = {
            "fileMeta": {"name": node.name, "type": node.type, "mode": int(node.mode, 8)}
            | {"owner": self.user_id, **provider, "shares": [], "deleted": node.deleted},
            "fileLocation": {**provider, "storage_id": self.storage_id, "size": len(node.content)}
            | {"space_id": node.space.id, "storage_file_created": True},
            "times": {"atime": node.atime, "mtime": node.mtime, "ctime": node.ctime},
        }
        revs = {d: rev for d, (_, rev) in node.revs.items()}
        changes = node.space.changes
        changes.append(
            Change(len(changes) + 1, node.id, node.path, doc, node.deleted, revs, fields)
        )
        self.changed.notify_all()

    def resolve(self, base: Node, names: list[str], create_parents: bool = False) -> Node:
        node = base
        for name in names:
            if node.type != "DIR":
                raise PosixError(errno.ENOTDIR)
            child = node.children.get(name)
            if child is None:
                if not create_parents:
                    raise PosixError(errno.ENOENT)
                child = self.create(node, name, "DIR")
            node = child
        return node

    def create(
        self, parent: Node, name: str, kind: str, content: bytes = b"", mode: str | None = None
    ) -> Node:
        if parent.type != "DIR":
            raise PosixError(errno.ENOTDIR)
        if _check_name(name) in parent.children:
            raise PosixError(errno.EEXIST)
        mode = mode or ("664" if kind == "REG" else "775")
        node = Node(self.new_id(), name, kind, parent, parent.space, mode, _now())
        if kind == "REG":
            node.content = bytearray(content)
        parent.children[name] = self.nodes[node.id] = node
        self.record(node, "fileMeta", bump=False)
        if kind == "REG":
            self.record(node, "fileLocation", bump=False)
            self.record(node, "times", bump=False)
        return node

    def create_at(self, base: Node, names: list[str], kind: str, *args: Any) -> Node:
        """At a path under `base`; args: content, create parents, mode."""
        content, parents, mode = args
        if not names:
            raise PosixError(errno.EEXIST)
        return self.create(self.resolve(base, names[:-1], parents), names[-1], kind, content, mode)

    def write(self, node: Node, data: bytes, offset: int | None) -> None:
        """At `offset` (extending), or the whole content when None."""
        if node.type != "REG":
            raise PosixError(errno.EISDIR)
        if offset is None:
            node.content = bytearray(data)
        else:
            if offset > len(node.content):
                node.content.extend(bytes(offset - len(node.content)))
            node.content[offset : offset + len(data)] = data
        node.mtime = node.ctime = _now()
        self.record(node, "fileLocation")
        self.record(node, "times")

    def move(self, node: Node, parent: Node, name: str) -> None:
        """POSIX rename: a file (or an empty folder) at the destination is replaced."""
        if node.parent is None:
            raise PosixError(errno.EPERM)
        if parent.type != "DIR":
            raise PosixError(errno.ENOTDIR)
        above: Node | None = parent
        while above is not None:
            if above is node:
                raise PosixError(errno.EINVAL)  # into itself
            above = above.parent
        existing = parent.children.get(name)
        if existing is node:
            return
        if existing is not None:
            if existing.type == "DIR" and node.type != "DIR":
                raise PosixError(errno.EISDIR)
            if existing.type != "DIR" and node.type == "DIR":
                raise PosixError(errno.ENOTDIR)
            if existing.children:
                raise PosixError(errno.ENOTEMPTY)
            self.delete(existing)
        del node.parent.children[node.name]
        node.name, node.parent, node.ctime = name, parent, _now()
        parent.children[name] = node
        self.record(node, "fileMeta")

    def delete(self, node: Node) -> None:
        """The node and everything in it, children first."""
        if node.parent is None:
            raise PosixError(errno.EPERM)
        for child in list(node.children.values()):
            self.delete(child)
        node.deleted = True
        self.record(node, "fileMeta")
        del node.parent.children[node.name]
        del self.nodes[node.id]


@dataclass
class Token:
    spaces: set[str] | None  # names; None: all
    changes: bool
    readonly: bool
    caveats: bool = False  # data caveats (a path, read only): the changes stream refuses it

    def may(self, space: Space) -> bool:
        return self.spaces is None or space.name in self.spaces


# -- the HTTP side -----------------------------------------------------------------------
class Fail(Exception):
    """An error answer: {"error": {"id", "description", "details"}}."""

    def __init__(self, status: int, error_id: str, description: str = "", **details: Any) -> None:
        super().__init__(error_id)
        self.status, self.error_id, self.details = status, error_id, details
        self.description = description or error_id

    @classmethod
    def posix(cls, name: str) -> Fail:
        return cls(400, "posix", f"Operation failed with POSIX error: {name}.", errno=name)


NOT_FOUND = ("notFound", "The resource could not be found.")
FORBIDDEN = ("forbidden", "You are not authorized to perform this operation.")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, provider: Oneprovider, port: int) -> None:
        self.provider = provider
        self.ssl_context: ssl.SSLContext | None = None
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.streaming: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        assert isinstance(request, socket.socket)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = request
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except OSError:
                return
            conn.settimeout(None)
        with self.connections_lock:
            self.connections[conn] = threading.current_thread()
        try:
            _Handler(conn, client_address, self)
        except OSError:
            pass  # the client went, or stop() cut the connection
        finally:
            with self.connections_lock:
                self.connections.pop(conn, None)
                self.streaming.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def op(self) -> Oneprovider:
        return self.server.provider

    def _serve(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        try:
            self.body = self._read_body()
            name, handler = self._route(url.path)
            with self.op.tree.lock:
                self.op.requests[name] += 1
            if self.op.unavailable:
                raise Fail(503, "serviceUnavailable", "The service is unavailable.")
            try:
                handler()
            except PosixError as e:
                raise Fail.posix(e.name) from None
        except Fail as f:
            error = {"id": f.error_id, "description": f.description, "details": f.details}
            self._send(f.status, {"error": error})
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            error = {"id": "internalServerError", "description": repr(e), "details": {}}
            self._send(500, {"error": error})  # a bug here shows as one, not a disconnect

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, status: int, payload: Any = None, raw: bytes | None = None, **headers: str
    ) -> None:
        self.send_response(status)
        if raw is None and payload is not None:
            raw = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        if status != 204:  # a 204 carries no Content-Length (RFC 9110)
            self.send_header("Content-Length", str(len(raw or b"")))
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    def _json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            raise Fail(400, "badValueJSON", "Bad value: failed to parse JSON.") from None
        if not isinstance(value, dict):
            raise Fail(400, "badValueJSON", "Bad value: expected a JSON object.")
        return value

    def _param(self, key: str, body: dict[str, Any] | None = None) -> Any:
        values = self.query.get(key)
        return values[-1] if values else (body or {}).get(key)

    def _int(
        self, key: str, body: dict[str, Any] | None = None, low: int = 0, high: int | None = None
    ) -> int | None:
        raw = self._param(key, body)
        if raw is None or raw == "":
            return None
        try:
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise ValueError(raw)
            value = int(raw)
        except ValueError:
            raise Fail(400, "badValueInteger", f'"{key}" must be an integer.', key=key) from None
        if value < low:
            raise Fail(400, "badValueTooLow", f'"{key}" is too low.', key=key, low=low)
        if high is not None and value > high:
            raise Fail(400, "badValueTooHigh", f'"{key}" is too high.', key=key, high=high)
        return value

    def _choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self._param(key) or default
        if value not in allowed:
            raise Fail(400, "badValueNotAllowed", f'Bad "{key}".', key=key, allowed=allowed)
        return str(value)

    def _mode(self) -> str | None:
        raw = self._param("mode")
        try:
            return None if raw is None else format(int(raw, 8) & 0o7777, "03o")
        except ValueError:
            raise Fail(400, "badValueInteger", '"mode" must be octal.', key="mode") from None

    def _auth(self, modifying: bool = False) -> Token:
        value = self.headers.get("X-Auth-Token") or ""
        bearer = self.headers.get("Authorization") or ""
        if not value and bearer.lower().startswith("bearer "):
            value = bearer[7:].strip()
        token = self.op.tokens.get(value) if value else None
        if token is None:
            raise Fail(401, "unauthorized", "You must authenticate yourself to do this.")
        if modifying and token.readonly:
            raise Fail(403, FORBIDDEN[0], "The token allows read-only data access.")
        return token

    def _allowed(self, token: Token, space: Space | None) -> Space:
        if space is None:
            raise Fail(404, *NOT_FOUND)
        if not token.may(space):
            raise Fail(403, *FORBIDDEN)
        return space

    def _node(self, token: Token, file_id: str) -> Node:
        node = self.op.tree.find(file_id)
        if node is None:
            raise Fail(404, *NOT_FOUND)
        self._allowed(token, node.space)
        return node

    def _route(self, path: str) -> tuple[str, Callable[[], None]]:
        method, p = self.command, functools.partial
        if path.startswith(PROVIDER_API + "/"):
            parts = path[len(PROVIDER_API) + 1 :].split("/")
            head, n = parts[0], len(parts)
            if head == "spaces" and method == "GET" and n <= 2:
                return ("spaces", self.spaces) if n == 1 else ("space", p(self.space, parts[1]))
            if head == "lookup-file-id" and method == "POST" and n >= 2:
                return "lookup", p(self.lookup, unquote("/".join(parts[1:])))
            if head == "changes" and method == "POST" and n == 3 and parts[1] == "metadata":
                return "changes", p(self.changes, unquote(parts[2]))
            if head == "data" and n >= 2:
                file_id, tail = unquote(parts[1]), parts[2:]
                routes: dict[tuple[str, str], tuple[str, Callable[..., None]]] = {
                    ("GET", ""): ("attrs", self.attrs),
                    ("DELETE", ""): ("delete", self.delete),
                    ("GET", "children"): ("children", self.children),
                    ("POST", "children"): ("create", self.create),
                    ("GET", "content"): ("content-get", self.content_get),
                    ("PUT", "content"): ("content-put", self.content_put),
                    ("PUT", "path"): ("create-path", self.create_path),
                    ("DELETE", "path"): ("delete-path", self.delete_path),
                }
                where = tail[0] if tail else ""
                if (len(tail) <= 1 or where == "path") and (method, where) in routes:
                    name, handler = routes[method, where]
                    rest = unquote("/".join(tail[1:]))
                    return name, p(handler, file_id, rest) if where == "path" else p(
                        handler, file_id
                    )
        elif path.startswith("/cdmi/") and method == "PUT":
            return "move", p(self.move, unquote(path[len("/cdmi/") :]))
        elif path == ONEZONE_API + "/tokens/infer_access_token_scope" and method == "POST":
            return "token-scope", self.token_scope
        return "unknown", self.not_found

    def not_found(self) -> None:
        raise Fail(404, *NOT_FOUND)

    # -- spaces, Onezone -------------------------------------------------------------------
    def spaces(self) -> None:
        token = self._auth()
        with self.op.tree.lock:
            spaces = [s for s in self.op.tree.spaces.values() if token.may(s)]
            self._send(200, [{"spaceId": s.id, "name": s.name} for s in spaces])

    def space(self, space_id: str) -> None:
        token = self._auth()
        with self.op.tree.lock:
            space = self._allowed(token, self.op.tree.spaces.get(unquote(space_id)))
            providers = [{"providerId": self.op.provider_id, "providerName": "test-provider"}]
            info = {"spaceId": space.id, "name": space.name, "fileId": space.root.id}
            self._send(200, {**info, "dirId": space.root.id, "providers": providers})

    def token_scope(self) -> None:
        token = self.op.tokens.get(str(self._json().get("token") or ""))
        if token is None:
            raise Fail(401, "unauthorized", "The token is not valid.")
        op = self.op
        with op.tree.lock:
            supports = {op.provider_id: {"readonly": False}}
            spaces = {
                s.id: {"name": s.name, "supports": supports}
                for s in op.tree.spaces.values()
                if token.may(s)
            }
        provider = {"name": "test-provider", "domain": op.host, "version": "21.02.5"}
        scope = {"readonly": token.readonly, "spaces": spaces}
        scope["providers"] = {op.provider_id: {**provider, "online": True}}
        self._send(200, {"validUntil": _now() + 3600, "dataAccessScope": scope})

    # -- files -----------------------------------------------------------------------------
    def lookup(self, path: str) -> None:
        token = self._auth()
        names = _names(path)
        with self.op.tree.lock:
            space = self.op.tree.space(names[0]) if names else None
            if space is None:
                raise PosixError(errno.ENOENT)
            self._allowed(token, space)
            self._send(200, {"fileId": self.op.tree.resolve(space.root, names[1:]).id})

    def _attribute_names(self, default: tuple[str, ...]) -> list[str | tuple[str, str]]:
        """The attributes asked for: camelCase names (`attributes`, in the JSON body or
        the query), or (old name, current name) pairs of the deprecated `attribute`."""
        old = list(self.query.get("attribute", []))
        for name in old:
            if name not in SNAKE_CASE:
                allowed = sorted(SNAKE_CASE)
                raise Fail(400, "badValueNotAllowed", name, key="attribute", allowed=allowed)
        asked = self._json().get("attributes", list(self.query.get("attributes", [])))
        if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
            raise Fail(400, "badValueNotAllowed", 'Bad "attributes".', key="attributes")
        for name in asked:
            if name not in ATTRIBUTES:
                allowed = sorted(ATTRIBUTES)
                raise Fail(400, "badValueNotAllowed", name, key="attributes", allowed=allowed)
        names: list[str | tuple[str, str]] = [(n, SNAKE_CASE[n]) for n in old]
        return names + list(asked) if names or asked else list(default)

    def _attributes(self, node: Node, names: list[str | tuple[str, str]]) -> dict[str, Any]:
        values: dict[str, Any] = {
            "fileId": node.id,
            "parentFileId": node.parent.id if node.parent is not None else None,
            "name": node.name,
            "posixPermissions": node.mode,
            **{"atime": node.atime, "mtime": node.mtime, "ctime": node.ctime},
            "creationTime": node.created,
            "type": node.type,
            "size": node.size,
            "directShareIds": [],
            "index": node.name,
            **{"displayGid": 0, "displayUid": 0, "hardlinkCount": 1},
            "ownerUserId": self.op.user_id,
            "originProviderId": self.op.provider_id,
            "path": node.path,
            "activePermissionsType": "posix",
            "hasCustomMetadata": False,
        }
        return {
            (name[0] if isinstance(name, tuple) else name): values[
                name[1] if isinstance(name, tuple) else name
            ]
            for name in names
        }

    def attrs(self, file_id: str) -> None:
        token, names = self._auth(), self._attribute_names(DEFAULT_ATTRIBUTES)
        with self.op.tree.lock:
            self._send(200, self._attributes(self._node(token, file_id), names))

    def children(self, file_id: str) -> None:
        token, names = self._auth(), self._attribute_names(("fileId", "name"))
        limit = self._int("limit", low=1, high=MAX_LIMIT) or MAX_LIMIT
        after = str(self._param("token") or "")
        try:
            after = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode()
        except ValueError:
            raise Fail(400, "badValueToken", 'Bad "token".', key="token") from None
        with self.op.tree.lock:
            node = self._node(token, file_id)
            if node.type != "DIR":
                raise PosixError(errno.ENOTDIR)
            all_names = sorted(node.children)
            start = bisect.bisect_right(all_names, after) if after else 0
            page = all_names[start : start + limit]
            last = start + limit >= len(all_names)
            next_token = None if last else base64.urlsafe_b64encode(page[-1].encode()).decode()
            self._send(
                200,
                {
                    "children": [self._attributes(node.children[c], names) for c in page],
                    "isLast": last,
                    "nextPageToken": next_token and next_token.rstrip("="),
                },
            )

    def content_get(self, file_id: str) -> None:
        token = self._auth()
        with self.op.tree.lock:
            node = self._node(token, file_id)
            if node.type != "REG":
                raise PosixError(errno.EISDIR)
            data = bytes(node.content)
        total, kind = len(data), "application/octet-stream"
        wanted = _range(self.headers.get("Range"), total)
        if wanted is None:
            self._send(200, raw=data, Content_Type=kind)
        elif wanted == (-1, -1):
            error = {"id": "badValueRange", "description": "Unsatisfiable range.", "details": {}}
            self._send(416, {"error": error}, Content_Range=f"bytes */{total}")
        else:
            start, end = wanted
            content_range = f"bytes {start}-{end}/{total}"
            self._send(
                206, raw=data[start : end + 1], Content_Type=kind, Content_Range=content_range
            )

    def _octets(self) -> None:
        """A body is content only as application/octet-stream (else 415, as Oneprovider)."""
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if self.body and kind != "application/octet-stream":
            raise Fail(415, "unsupportedMediaType", f"Content-Type {kind or 'none'!r}.")

    def content_put(self, file_id: str) -> None:
        token, offset = self._auth(modifying=True), self._int("offset")
        self._octets()
        with self.op.tree.lock:
            self.op.tree.write(self._node(token, file_id), self.body, offset)
        self._send(204)

    def create(self, file_id: str) -> None:
        token, name = self._auth(modifying=True), self._param("name")
        self._octets()
        kind, mode = self._choice("type", ("REG", "DIR"), "REG"), self._mode()
        if not name:
            raise Fail(400, "missingRequiredValue", 'Missing "name".', key="name")
        with self.op.tree.lock:
            node = self.op.tree.create(self._node(token, file_id), name, kind, self.body, mode)
        self._send(201, {"fileId": node.id})

    def create_path(self, file_id: str, path: str) -> None:
        token, names = self._auth(modifying=True), _names(path)
        self._octets()
        kind, mode = self._choice("type", ("REG", "DIR"), "REG"), self._mode()
        parents = self._choice("create_parents", ("true", "false"), "false") == "true"
        with self.op.tree.lock:
            base = self._node(token, file_id)
            node = self.op.tree.create_at(base, names, kind, self.body, parents, mode)
        self._send(201, {"fileId": node.id})

    def delete(self, file_id: str, path: str = "") -> None:
        token, names = self._auth(modifying=True), _names(path)
        with self.op.tree.lock:
            node = self.op.tree.resolve(self._node(token, file_id), names)
            if node.parent is None:
                raise Fail(403, FORBIDDEN[0], "The space's root cannot be removed.")
            self.op.tree.delete(node)
        self._send(204)

    delete_path = delete

    def move(self, path: str) -> None:
        token = self._auth(modifying=True)
        if not self.headers.get("X-CDMI-Specification-Version"):
            raise Fail(400, "missingRequiredValue", "Not a CDMI request.", key="cdmi version")
        source = self._json().get("move")
        if not isinstance(source, str):
            raise Fail(400, "missingRequiredValue", 'Only CDMI "move" is served.', key="move")
        dst, src = _names(path), _names(source)
        tree = self.op.tree
        with tree.lock:
            space = self._allowed(token, tree.space(dst[0]) if dst else None)
            if not src or tree.space(src[0]) is not space:
                raise Fail(400, "badValueNotAllowed", "Moves stay in a space.", key="move")
            if len(dst) < 2 or len(src) < 2:
                raise Fail(403, FORBIDDEN[0], "The space's root cannot be moved.")
            try:
                node = tree.resolve(space.root, src[1:])
                parent = tree.resolve(space.root, dst[1:-1])
            except PosixError:
                raise Fail(404, *NOT_FOUND) from None
            tree.move(node, parent, dst[-1])
            answer = {
                "objectType": "application/cdmi-object",
                "objectID": node.id,
                "objectName": node.name,
                "parentURI": parent.path + "/",
                "parentID": parent.id,
                "capabilitiesURI": "cdmi_capabilities/dataobject/",
                "completionStatus": "Complete",
                "metadata": {},
            }
        cdmi = {"Content_Type": "application/cdmi-object", "X_CDMI_Specification_Version": "1.1.1"}
        self._send(201, raw=json.dumps(answer).encode(), **cdmi)

    # -- the changes stream --------------------------------------------------------------
    def changes(self, space_id: str) -> None:
        token = self._auth()
        with self.op.tree.lock:
            space = self._allowed(token, self.op.tree.spaces.get(space_id))
        if token.caveats:  # as Oneprovider: no changes stream for a token with data caveats
            raise Fail(401, "unauthorized", "Caveat unverified: a data access caveat.")
        if not token.changes:
            raise Fail(403, FORBIDDEN[0], "The token may not read the changes stream.")
        body, specs = self._json(), {}
        for doc, known in DOCS.items():
            if doc not in body:
                continue
            spec = body[doc]
            fields = spec.get("fields", []) if isinstance(spec, dict) else None
            if not isinstance(fields, list) or not all(f in known for f in fields):
                raise Fail(400, "badValueNotAllowed", doc, key=f"{doc}.fields", allowed=known)
            specs[doc] = (fields, bool(spec.get("always", False)))
        if not specs:
            raise Fail(400, "missingAtLeastOneValue", "Ask for a doc type.", keys=list(DOCS))
        timeout, last_seq = self._int("timeout", body), self._int("last_seq", body)
        with self.op.tree.lock:
            cursor = len(space.changes) if last_seq is None else last_seq
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with self.server.connections_lock:
            self.server.streaming.add(self.connection)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while (changes := self._wait_changes(space, cursor, deadline)) is not None:
            cursor += len(changes)
            records = [r for c in changes if (r := _record(c, specs, space)) is not None]
            if records:
                data = [json.dumps(r).encode() + b"\r\n" for r in records]
                try:
                    self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(d), d) for d in data))
                except OSError:
                    self.close_connection = True
                    return
                if timeout is not None:
                    deadline = time.monotonic() + timeout / 1000
        if self.op.stopping:
            self.close_connection = True
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _wait_changes(
        self, space: Space, cursor: int, deadline: float | None
    ) -> list[Change] | None:
        """The changes after `cursor` once there are some; None to end the stream: on
        timeout, when the client went, or when the server stops."""
        with self.op.tree.changed:
            while True:
                if len(space.changes) > cursor:
                    return space.changes[cursor:]
                left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if self.op.stopping or left <= 0 or self._client_gone():
                    return None
                self.op.tree.changed.wait(left)

    def _client_gone(self) -> bool:
        try:  # a client sends nothing while it reads a stream: readable is closed
            return bool(select.select([self.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True


def _record(
    change: Change, specs: dict[str, tuple[list[str], bool]], space: Space
) -> dict[str, Any] | None:
    """The stream's record of a change for the asked doc types, None if none applies."""
    docs = {
        doc: {
            "rev": change.revs[doc],
            "mutators": [change.fields["fileMeta"]["provider_id"]],
            "changed": doc == change.doc,
            "deleted": change.deleted,
            "fields": {name: change.fields[doc][name] for name in asked},
        }
        for doc, (asked, always) in specs.items()
        if doc == change.doc or always
    }
    return (
        # The canonical path, as current Oneproviders give it: the space's id first.
        {"fileId": change.file_id, "filePath": _canonical(change.path, space), "seq": change.seq}
        | docs
        if docs
        else None
    )


def _canonical(path: str, space: Space) -> str:
    """`/space name/a/b` as `/space id/a/b`."""
    return f"/{space.id}{path[len(space.name) + 1 :]}"


def _range(header: str | None, total: int) -> tuple[int, int] | None:
    """(first, last) byte of a `Range: bytes=...` header; None: the whole content (no
    header or one not understood); (-1, -1): not satisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes=") :].strip().partition("-")
    if (
        not sep
        or not (first or last)
        or not (first or "0").isdigit()
        or not (last or "0").isdigit()
    ):
        return None
    if not first:  # the last N bytes
        n = int(last)
        return (-1, -1) if n == 0 or total == 0 else (max(total - n, 0), total - 1)
    start, end = int(first), int(last) if last else total - 1
    if start >= total:
        return -1, -1
    return None if end < start else (start, min(end, total - 1))


# -- the server ----------------------------------------------------------------------------
def _close(server: _Server, ca_file: str | None) -> None:
    server.server_close()
    if ca_file is not None:
        os.unlink(ca_file)


class Oneprovider:
    """The test server: add spaces and tokens, start() it (or use it as a context
    manager), point clients at `host` or `url`."""

    def __init__(self, tls: bool = False, port: int = 0) -> None:
        self.tree = Tree()
        self.provider_id, self.user_id = self.tree.provider_id, self.tree.user_id
        self.tokens: dict[str, Token] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.unavailable = False
        self.stopping = False
        self._thread: threading.Thread | None = None
        self._server = _Server(self, port)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.ca_file: str | None = None
        if tls:
            import trustme

            ca = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            self._server.ssl_context = context
            fd, self.ca_file = tempfile.mkstemp(prefix="oneprovider-ca-", suffix=".pem")
            os.close(fd)
            ca.cert_pem.write_to_path(self.ca_file)
        self._close = weakref.finalize(self, _close, self._server, self.ca_file)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ends the change streams (each with its last chunk) and every connection."""
        with self.tree.changed:
            self.stopping = True
            self.tree.changed.notify_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._close()
        with self._server.connections_lock:
            connections = dict(self._server.connections)
            streaming = set(self._server.streaming)
        deadline = time.monotonic() + 5
        for conn in sorted(connections, key=lambda c: c in streaming):
            if conn in streaming:
                connections[conn].join(max(deadline - time.monotonic(), 0))
            with suppress(OSError):  # socket's own: SSLSocket's drops its state under a reader
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(max(deadline - time.monotonic(), 0))

    def __enter__(self) -> Oneprovider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up ------------------------------------------------------------------------------
    def add_space(self, name: str) -> str:
        with self.tree.lock:
            if any(s.name == name for s in self.tree.spaces.values()):
                raise ValueError(f"space {name!r} exists")
            return self.tree.add_space(name).id

    def add_token(
        self,
        token: str,
        spaces: list[str] | None = None,
        changes: bool = True,
        readonly: bool = False,
        caveats: bool = False,
    ) -> None:
        with self.tree.lock:
            allowed = None if spaces is None else set(spaces)
            self.tokens[token] = Token(allowed, changes, readonly, caveats)

    def _space(self, name: str) -> Space:
        space = self.tree.space(name)
        if space is None:
            raise KeyError(f"no space {name!r}")
        return space

    # -- another writer on the provider --------------------------------------------------
    def write(self, space: str, path: str, data: bytes, chunks: int = 1) -> str:
        """Creates the file (and its parents) or overwrites it in place (same file id),
        in `chunks` writes, each recorded and seen by readers as it lands."""
        if chunks < 1:
            raise ValueError("chunks must be at least 1")
        size = -(-len(data) // chunks)
        pieces = [data[i * size : (i + 1) * size] for i in range(chunks)]
        names = _names(path)
        with self.tree.lock, _as_os_error():
            parent = self.tree.resolve(self._space(space).root, names[:-1], create_parents=True)
            node = parent.children.get(names[-1])
            if node is None:
                node = self.tree.create(parent, names[-1], "REG", pieces[0])
            else:
                self.tree.write(node, pieces[0], None)
        offset = len(pieces[0])
        for piece in pieces[1:]:
            with self.tree.lock, _as_os_error():
                self.tree.write(node, piece, offset)
            offset += len(piece)
        return node.id

    def rename(self, space: str, src: str, dst: str) -> None:
        with self.tree.lock, _as_os_error():
            root, to = self._space(space).root, _names(dst)
            node = self.tree.resolve(root, _names(src))
            self.tree.move(node, self.tree.resolve(root, to[:-1]), to[-1])

    def remove(self, space: str, path: str) -> None:
        with self.tree.lock, _as_os_error():
            self.tree.delete(self.tree.resolve(self._space(space).root, _names(path)))

    def mkdir(self, space: str, path: str) -> str:
        """The folder (and its parents); an existing folder's id."""
        with self.tree.lock, _as_os_error():
            node = self.tree.resolve(self._space(space).root, _names(path), create_parents=True)
            if node.type != "DIR":
                raise PosixError(errno.EEXIST)
            return node.id

    def read(self, space: str, path: str) -> bytes | None:
        with self.tree.lock:
            try:
                node = self.tree.resolve(self._space(space).root, _names(path))
            except PosixError:
                return None
            return bytes(node.content) if node.type == "REG" else None

    def seq(self, space: str) -> int:
        with self.tree.lock:
            return len(self._space(space).changes)


def main() -> None:
    parser = argparse.ArgumentParser(description="An in-memory Oneprovider REST server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--space", action="append", default=[], help="a space (repeatable)")
    parser.add_argument("--token", action="append", default=[], help="a token (repeatable)")
    parser.add_argument("--tls", action="store_true", help="https, with a trustme CA")
    args = parser.parse_args()
    with Oneprovider(tls=args.tls, port=args.port) as server:
        for name in args.space or ["space1"]:
            print(f"space {name}: {server.add_space(name)}")
        for token in args.token or ["t0ken"]:
            server.add_token(token)
        print(f"serving {server.url}" + (f" (CA: {server.ca_file})" if server.ca_file else ""))
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
