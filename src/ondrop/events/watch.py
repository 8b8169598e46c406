"""Watch a local provider's folder with inotify and rescan it on start.

A file counts as landed when it is closed after writing or renamed into place.
A file that appears without being opened (moved in from elsewhere, hard-linked)
counts once it has been quiet for a moment; one that is open for writing waits
for its close, however slow the writer. Folders, temp files and names that start
with a dot never count; a link is offered as Refused, never followed.

One thread reads inotify's events in batches and keeps the settle clock: a burst of
files costs a read per batch, not a thread hand-off per event.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ondrop.events import inotify
from ondrop.events.base import EventSource, Sink
from ondrop.events.poll import hidden, listing
from ondrop.storage.base import TEMP_PREFIX, ObjectInfo, under
from ondrop.storage.local import LocalStorage

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds a file that appeared without a close must stay unchanged
BATCH = 500  # files recorded in one transaction of the store
MASK = (
    inotify.CLOSE_WRITE
    | inotify.CLOSE_NOWRITE
    | inotify.OPEN
    | inotify.MODIFY
    | inotify.MOVED_FROM
    | inotify.MOVED_TO
    | inotify.CREATE
    | inotify.EXCL_UNLINK
)


class FolderWatcher(EventSource):
    def __init__(
        self, provider: LocalStorage, folders: Callable[[], list[str]], settle: float = SETTLE
    ) -> None:
        self.provider = provider
        self.folders = folders  # the folders services take input from, for the rescan
        self.settle = settle
        self._sink: Sink | None = None
        self._inotify: inotify.Inotify | None = None
        self._watched: dict[int, str] = {}  # watch id -> folder
        self._watch_ids: dict[str, int] = {}  # folder -> watch id
        self._pending: dict[str, float] = {}  # appeared, not opened: when last changed
        self._writing: set[str] = set()  # appeared and opened: wait for the close
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="ondrop-watch", daemon=True)

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._inotify = inotify.Inotify()
        # Watch first, then rescan: nothing can fall between the two.
        self._watch_tree(str(self.provider.root), files=None)
        self._thread.start()
        self.rescan()

    def rescan(self) -> int:
        """Offer every object under the watched folders; the store drops what it has seen."""
        count = 0
        for folder in self.folders():
            try:
                infos = listing(self.provider, folder)
            except Exception:
                log.exception("could not rescan %s:%s", self.provider.name, folder)
                continue
            self._deliver(infos)
            count += len(infos)
        return count

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join()
        if self._inotify is not None:
            self._inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    # -- the watching thread ------------------------------------------------------------
    def _run(self) -> None:
        assert self._inotify is not None
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._stopping:
            nearest = min(self._pending.values(), default=None)
            timeout = (
                None if nearest is None else max(0.0, nearest + self.settle - time.monotonic())
            )
            poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            if self._stopping:
                return
            try:
                landed: list[str] = []
                while events := self._inotify.read():
                    for event in events:
                        self._handle(event, landed)
                now = time.monotonic()
                settled = [p for p, t in self._pending.items() if now - t >= self.settle]
                for path in settled:
                    del self._pending[path]
                self._landed([*landed, *settled])
            except Exception:
                log.exception("the watcher of %s hit a problem; it goes on", self.provider.name)

    def _handle(self, event: inotify.InotifyEvent, landed: list[str]) -> None:
        if event.mask & inotify.Q_OVERFLOW:
            log.warning(
                "%s: more files arrived at once than inotify could queue; rescanning",
                self.provider.name,
            )
            self.rescan()
            return
        folder = self._watched.get(event.wd)
        if folder is None:
            return
        if event.mask & inotify.IGNORED:  # the folder is gone
            del self._watched[event.wd]
            self._watch_ids.pop(folder, None)
            return
        if not event.name or event.name.startswith(TEMP_PREFIX):
            return
        if event.name.startswith(".") and not event.mask & inotify.ISDIR:
            return  # a writer's temporary name (a folder may hold an input folder: watched)
        path, mask = os.path.join(folder, event.name), event.mask
        if mask & inotify.ISDIR:
            if mask & inotify.CREATE:
                self._watch_tree(path, files=self._pending)  # written there before the watch
            elif mask & inotify.MOVED_TO:
                self._watch_tree(path, files=landed)  # moved in whole: complete
            elif mask & inotify.MOVED_FROM:
                self._unwatch_tree(path)
        elif mask & (inotify.CLOSE_WRITE | inotify.MOVED_TO):
            self._pending.pop(path, None)
            self._writing.discard(path)
            landed.append(path)
        elif mask & inotify.CREATE:
            self._pending[path] = time.monotonic()
        elif mask & inotify.OPEN:
            # open(O_CREAT) gives "created" then "opened": a writer holds the file until it
            # closes it, so it must not settle early. A file moved in is never opened here.
            if self._pending.pop(path, None) is not None:
                self._writing.add(path)
        elif mask & inotify.CLOSE_NOWRITE:
            # Only read after all (someone looked at a moved-in file): let it settle again.
            if path in self._writing:
                self._writing.discard(path)
                self._pending[path] = time.monotonic()
        elif mask & inotify.MODIFY:
            # Writes to a file that appeared before its folder was watched keep it unsettled.
            if path in self._pending:
                self._pending[path] = time.monotonic()
        elif mask & inotify.MOVED_FROM:
            self._pending.pop(path, None)
            self._writing.discard(path)

    def _watch_tree(self, top: str, files: dict[str, float] | list[str] | None) -> None:
        """Watch `top` and the folders under it; the files already there are added to
        `files` (settling, or landed), or left to the rescan when it is None."""
        assert self._inotify is not None
        stack = [top]
        while stack:
            folder = stack.pop()
            try:  # the watch before the listing: what lands in between is in one or both
                wd = self._inotify.add(folder, MASK)
            except inotify.InotifyError as exc:
                if exc.errno == errno.ENOSPC:
                    log.error(
                        "cannot watch %s: the system's limit on inotify watches is reached; "
                        "raise it (sysctl fs.inotify.max_user_watches) and restart",
                        folder,
                    )
                continue  # gone already, or not a folder
            self._watched[wd] = folder
            self._watch_ids[folder] = wd
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.startswith("."):
                    continue
                elif isinstance(files, dict):
                    files.setdefault(entry.path, time.monotonic())
                elif isinstance(files, list):
                    files.append(entry.path)

    def _unwatch_tree(self, top: str) -> None:
        assert self._inotify is not None
        inside = top + os.sep
        for folder in [f for f in self._watch_ids if f == top or f.startswith(inside)]:
            wd = self._watch_ids.pop(folder)
            self._watched.pop(wd, None)
            self._inotify.remove(wd)
        for path in [p for p in self._pending if p.startswith(inside)]:
            del self._pending[path]
        self._writing = {p for p in self._writing if not p.startswith(inside)}

    # -- delivery -----------------------------------------------------------------
    def _landed(self, paths: list[str]) -> None:
        folders = self.folders()
        infos = []
        for path in dict.fromkeys(paths):  # a file closed twice in a batch: looked at once
            key = self.provider.key_of(Path(path))
            if key is None or not any(
                under(key, folder) and not hidden(key, folder) for folder in folders
            ):
                continue  # in no service's input folder (a job's output, say), or hidden
            info = self.provider.entry(key)  # the object, or a link refused
            if info is not None:
                infos.append(info)
        self._deliver(infos)

    def _deliver(self, infos: list[ObjectInfo]) -> None:
        for start in range(0, len(infos), BATCH):
            batch = infos[start : start + BATCH]
            if self._sink is None:
                return
            try:
                self._sink(self.provider.name, batch)
            except Exception:
                # Not acknowledged: the rescan on the next start offers them again.
                log.exception(
                    "could not record %d file(s) of %s from %s on; they are picked up on "
                    "the next start",
                    len(batch),
                    self.provider.name,
                    batch[0].key,
                )
