"""Events from a Onedata space's changes stream, without listing the space.

A reader thread holds `POST /changes/metadata/{space}` open and takes each change record
(a file's name, type, size and modification time, with its sequence number); a delivery
thread offers the files that are in an input folder to the sink. A file renamed into
place from a temporary name (a writer's `.name`, or ondrop's own uploads) is complete at
once; one written where it lies is offered once it has been quiet for `settle` seconds,
so that a writer's pieces make one job, not one each. Folders, deleted files and names
that start with a dot start nothing; a service's own outputs are the intake's to drop.

The cursor (the last sequence number whose changes are all recorded) is kept in the
store, so a restart reads on from there: at least once, and the store's deduplication by
version makes it one job per file version. An input folder seen for the first time is
listed once, after the stream is open, for the files already in it. A token without the
changes privilege (HTTP 403) falls back to listing every `fallback_interval` seconds,
saying why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ondrop.errors import InvalidKeyError, OndropError, StorageError
from ondrop.events.base import EventSource, Sink
from ondrop.events.poll import Poller, hidden, listing
from ondrop.storage.base import ObjectInfo, check_key, under
from ondrop.storage.onedata import API, OnedataStorage, version_of
from ondrop.store.base import Store

log = logging.getLogger(__name__)

# What each record carries: always all three, so one record describes the file whole.
SPEC = {
    "fileMeta": {"fields": ["name", "type", "deleted"], "always": True},
    "fileLocation": {"fields": ["size"], "always": True},
    "times": {"fields": ["mtime"], "always": True},
}
QUIET = 30.0  # seconds without a change after which the provider ends a stream (reopened)
RETRY = 1.0  # first wait after a failure; doubles up to RETRY_MAX
RETRY_MAX = 30.0
TICK = 1.0  # the delivery thread's look at new input folders and the cursor
BATCH = 500  # files recorded in one transaction of the store
REMEMBERED = 10_000  # file versions already offered, not offered again for a repeated record
JOIN_TIMEOUT = 5.0


@dataclass
class _Change:
    info: ObjectInfo
    seq: int
    due: float  # monotonic time it may be offered


def cursor_key(provider: OnedataStorage) -> str:
    """Where the store keeps the cursor: sequence numbers are a Oneprovider's own, so one
    of another provider of the space (or of a space made again) is never read on from."""
    return f"onedata-changes:{provider.name}:{provider.origin}:{provider.space_id}"


def folders_key(provider: OnedataStorage) -> str:
    return f"onedata-listed:{provider.name}:{provider.origin}:{provider.space_id}"


class ChangesStream(EventSource):
    def __init__(
        self,
        provider: OnedataStorage,
        folders: Callable[[], list[str]],
        store: Store,
        fallback_interval: float,
        settle: float | None = None,
    ) -> None:
        self.provider = provider
        self.folders = folders
        self.store = store
        self.fallback_interval = fallback_interval
        self.settle = provider.settle if settle is None else settle
        self._sink: Sink | None = None
        self._stop = threading.Event()
        self._opened = threading.Event()  # a stream is open: listings miss nothing now
        self._wake = threading.Condition()
        self._pending: dict[str, _Change] = {}  # file id -> its latest change
        self._renamed: set[str] = set()  # file ids seen under a temporary name
        self._offered: OrderedDict[str, str] = OrderedDict()  # key -> the version offered
        self._arrived: set[str] = set()  # folders moved or made in an input folder: listed
        self._read = -1  # the highest sequence number read
        self._saved = -1  # the cursor as the store has it
        self._listed: set[str] = set()
        self._loaded = False  # the cursor and the listed folders read from the store
        self._opens = 0  # streams opened from "now" (no cursor): a listing counts after one
        self._client: httpx.Client | None = None
        self._socket: socket.socket | None = None  # the open stream's
        self._fallback: Poller | None = None
        self._threads = [
            threading.Thread(target=self._reading, name=f"ondrop-changes-{provider.name}"),
            threading.Thread(target=self._delivering, name=f"ondrop-offer-{provider.name}"),
        ]
        for thread in self._threads:
            thread.daemon = True

    def start(self, sink: Sink) -> None:
        self._sink = sink
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._socket is not None:  # wakes a read that waits on the stream (closing the
            with contextlib.suppress(OSError):  # client from this thread would not)
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(JOIN_TIMEOUT)
        if self._fallback is not None:
            self._fallback.stop()

    @property
    def cursor(self) -> int:
        """The sequence number up to which every change is recorded (or needs nothing)."""
        with self._wake:
            return self._cursor()

    def _cursor(self) -> int:
        if self._pending:
            return min(c.seq for c in self._pending.values()) - 1
        return self._read

    # -- reading the stream ---------------------------------------------------------------
    def _reading(self) -> None:
        wait, failing = RETRY, False
        while not self._stop.is_set():
            try:
                if self._follow():
                    return  # fell back to listing
                wait, failing = RETRY, False
            except Exception as exc:
                if self._stop.is_set():
                    return
                if not failing:
                    message = (
                        exc if isinstance(exc, OndropError) else f"{type(exc).__name__}: {exc}"
                    )
                    log.warning(
                        "the changes stream of %s stopped (%s); opening it again, every %g s "
                        "at most until it answers",
                        self.provider.name,
                        message,
                        RETRY_MAX,
                    )
                failing = True
                self._stop.wait(wait)
                wait = min(wait * 2, RETRY_MAX)

    def _follow(self) -> bool:
        """Read one stream to its end; True when the token may not read it (fell back)."""
        provider = self.provider
        space_id = provider.space_id  # the token and the space are good for data
        if not self._loaded:
            saved = self.store.get_meta(cursor_key(provider))
            self._saved = self._read = int(saved) if saved is not None else -1
            self._listed = set(json.loads(self.store.get_meta(folders_key(provider)) or "[]"))
            self._loaded = True
        params: dict[str, int] = {"timeout": int(QUIET * 1000)}
        if self._read >= 0:
            params["last_seq"] = self._read
        self._client = self._client or provider.client(QUIET + 30.0)
        what = "read the space's changes"
        try:
            with self._client.stream(
                "POST", f"{API}/changes/metadata/{space_id}", params=params, json=SPEC
            ) as response:
                stream = response.extensions.get("network_stream")
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                if self._stop.is_set():
                    return False
                if response.status_code in (401, 403):
                    # The same token was good for the space just now: it may not read the
                    # stream (403), or carries data caveats, which the stream refuses (401).
                    response.read()
                    self._fall_back(response)
                    return True
                provider.checked(response, what)
                if response.status_code != 200:
                    response.read()
                    raise StorageError(
                        f"{provider.name}: {what}: HTTP {response.status_code}: "
                        f"{response.text[:200]}"
                    )
                if self._read < 0:
                    # A stream from "now", whose place no record has told yet: what came
                    # before it is the listing's, so list every input folder again.
                    with self._wake:
                        self._listed.clear()
                        self._opens += 1
                self._opened.set()
                with self._wake:
                    self._wake.notify_all()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return False
                    if line.strip():
                        self._take(json.loads(line))
        except httpx.TransportError as exc:
            raise provider.unreachable(what, exc) from None
        return False

    def _fall_back(self, response: httpx.Response) -> None:
        interval = self.fallback_interval
        why = (
            "it lacks the privilege"
            if response.status_code == 403
            else "the stream refuses tokens with data caveats (a path, read only)"
        )
        log.warning(
            "the token of %s may not read the changes stream of space %r (HTTP %d: %s; %s); "
            "listing its input folders %s instead",
            self.provider.name,
            self.provider.space,
            response.status_code,
            response.text[:200],
            why,
            f"every {interval:g} s" if interval else "once, at start",
        )
        self._fallback = Poller(self.provider, self.folders, interval)
        assert self._sink is not None
        self._fallback.start(self._sink)

    def _take(self, record: dict[str, Any]) -> None:
        """One change record: the file it describes pending, due now or once settled. The
        read position moves past it only once it is taken (a failure reads it again)."""
        seq = int(record["seq"])
        file_id = str(record.get("fileId") or "")
        meta = record.get("fileMeta") or {}
        fields = meta.get("fields") or {}
        size = (record.get("fileLocation") or {}).get("fields", {}).get("size")
        mtime = (record.get("times") or {}).get("fields", {}).get("mtime")
        gone = bool(meta.get("deleted") or fields.get("deleted"))
        folder = str(fields.get("type", "")).upper() == "DIR"
        key = self.provider.key_of(str(record.get("filePath") or ""))
        temporary = key is not None and posixpath.basename(key).startswith(".")
        if key is not None and not temporary:
            try:
                check_key(key, "a file name in the changes stream")
            except InvalidKeyError as exc:
                log.warning("%s: %s; it starts no job", self.provider.name, exc)
                key = None
        info: ObjectInfo | None = None
        if not (gone or folder or key is None or not file_id or temporary):
            if size is None or mtime is None:
                info = self.provider.stat(key)  # a record without them: ask the provider
            else:
                info = ObjectInfo(key, int(size), version_of(file_id, mtime, int(size)), mtime)
        with self._wake:
            if folder and not gone and key is not None and not temporary:
                self._arrived.add(key)  # moved or made here: what it holds is listed
                self._wake.notify_all()
            elif info is None:
                self._pending.pop(file_id, None)
                if temporary and not folder and not gone:
                    self._renamed.add(file_id)  # a temporary name: complete once renamed
                else:
                    self._renamed.discard(file_id)
            else:
                self._taken(file_id, info, seq)
            self._read = max(self._read, seq)

    def _taken(self, file_id: str, info: ObjectInfo, seq: int) -> None:
        if self._offered.get(info.key) == info.version:
            return  # the same version again (its ctime, say): offered already
        now = time.monotonic()
        before = self._pending.get(file_id)
        if file_id in self._renamed:
            self._renamed.discard(file_id)
            due = now
        elif before is not None and before.info.version == info.version:
            due = before.due
        else:
            due = now + self.settle
        self._pending[file_id] = _Change(info, seq, due)
        self._wake.notify_all()

    # -- offering files ---------------------------------------------------------------
    def _delivering(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                nearest = min((c.due for c in self._pending.values()), default=None)
                timeout = TICK if nearest is None else max(0.0, nearest - time.monotonic())
                if timeout > 0:
                    self._wake.wait(min(timeout, TICK))
                if self._stop.is_set():
                    return
                now = time.monotonic()
                ripe = {f: c for f, c in self._pending.items() if c.due <= now}
                arrived, self._arrived = self._arrived, set()
                read = self._read  # what this pass covers: later records wait for the next
            try:
                if self._opened.is_set():
                    self._list_new_folders()
                self._list_arrived(arrived)
                self._offer(ripe)
                self._save_cursor(read)
            except Exception:
                log.exception("offering the changes of %s failed; trying again", self.provider.name)
                self._stop.wait(RETRY)

    def _offer(self, ripe: dict[str, _Change]) -> None:
        if not ripe:
            return
        folders = self.folders()
        with self._wake:  # in an input folder, and not offered by a listing meanwhile
            wanted = [
                (file_id, change)
                for file_id, change in ripe.items()
                if any(
                    under(change.info.key, f) and not hidden(change.info.key, f) for f in folders
                )
                and self._offered.get(change.info.key) != change.info.version
            ]
        failed: set[str] = set()
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            if self._stop.is_set() or self._sink is None:
                return
            try:
                self._sink(self.provider.name, [change.info for _, change in batch])
            except Exception:
                log.exception(
                    "could not record %d file(s) of %s from %s on; offered again in %g s",
                    len(batch),
                    self.provider.name,
                    batch[0][1].info.key,
                    RETRY,
                )
                with self._wake:  # still pending: the cursor stays before them
                    for file_id, change in batch:
                        change.due = time.monotonic() + RETRY
                        failed.add(file_id)
                continue  # the other batches go on
            with self._wake:
                for _, change in batch:
                    self._remember(change.info)
        with self._wake:  # offered, or in no input folder: done, unless changed meanwhile
            for file_id, change in ripe.items():
                if file_id not in failed and self._pending.get(file_id) is change:
                    del self._pending[file_id]

    def _remember(self, info: ObjectInfo) -> None:
        """A version offered (its key and file id in it), not offered again by a record."""
        self._offered[info.key] = info.version
        self._offered.move_to_end(info.key)
        while len(self._offered) > REMEMBERED:
            self._offered.popitem(last=False)

    def _list_arrived(self, folders: set[str]) -> None:
        """Offer what folders moved into an input folder hold: a folder's move is one record,
        not one per file in it."""
        inputs = self.folders()
        for folder in sorted(folders):
            for top in inputs:
                if under(folder, top):  # moved into an input folder
                    place = folder
                elif folder == top or under(top, folder):  # an input folder moved in whole
                    place = top
                else:
                    continue
                if not self._offer_listed(place, top):
                    return

    def _list_new_folders(self) -> None:
        folders = self.folders()
        with self._wake:
            new = [f for f in folders if f not in self._listed]
            opens = self._opens
        for folder in new:
            if not self._offer_listed(folder, folder):
                return
            with self._wake:
                if self._opens == opens:  # no stream from "now" opened meanwhile
                    self._listed.add(folder)
        if new:
            self.store.set_meta(folders_key(self.provider), json.dumps(sorted(self._listed)))

    def _offer_listed(self, place: str, top: str) -> bool:
        """Offer the files a listing of `place`, in the input folder `top`, finds (but the
        versions offered already); False when stopped before the end."""
        found = listing(self.provider, place)
        with self._wake:
            infos = [
                i for i in found if not hidden(i.key, top) and self._offered.get(i.key) != i.version
            ]
        for start in range(0, len(infos), BATCH):
            if self._sink is None or self._stop.is_set():
                return False
            batch = infos[start : start + BATCH]
            self._sink(self.provider.name, batch)
            with self._wake:
                for info in batch:
                    self._remember(info)
        return True

    def _save_cursor(self, read: int) -> None:
        cursor = min(self.cursor, read)
        if cursor > self._saved:
            self.store.set_meta(cursor_key(self.provider), str(cursor))
            self._saved = cursor
