"""Watch a local provider's folder with inotify (watchdog) and rescan it on start.

A file counts as landed when it is closed after writing or renamed into place.
A file that appears without being opened (moved in from elsewhere, hard-linked)
counts once it has been quiet for a moment; one that is open for writing waits
for its close, however slow the writer. Folders and temp files never count.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ondrop.events.base import EventSource, Sink
from ondrop.storage.local import LocalStorage

log = logging.getLogger(__name__)

# watchdog warns from its own thread when a folder tree is created faster than it adds
# watches (`mkdir -p a/b`); it then keeps the watch it has, so the warning is only noise.
warnings.filterwarnings(
    "ignore", message=r"Callback with id .* already exists", category=RuntimeWarning
)

SETTLE = 1.0  # seconds a file that appeared without a close must stay unchanged


class FolderWatcher(EventSource, FileSystemEventHandler):
    def __init__(
        self, provider: LocalStorage, folders: Callable[[], list[str]], settle: float = SETTLE
    ) -> None:
        self.provider = provider
        self.folders = folders  # the folders services take input from, for the rescan
        self.settle = settle
        self._sink: Sink | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._pending: dict[Path, float] = {}  # appeared, not opened: when last changed
        self._writing: set[Path] = set()  # appeared and opened: wait for the close
        self._cond = threading.Condition()
        self._stopping = False
        self._settler = threading.Thread(
            target=self._settle_loop, name="ondrop-settle", daemon=True
        )

    def start(self, sink: Sink) -> None:
        self._sink = sink
        observer = Observer()
        # Only the events that say a file landed: inotify sends no others (writes, folder
        # changes), which a burst of files would otherwise flood the watcher with.
        observer.schedule(
            self,
            str(self.provider.root),
            recursive=True,
            event_filter=[
                FileCreatedEvent,
                FileMovedEvent,
                FileOpenedEvent,
                FileClosedEvent,
                FileClosedNoWriteEvent,
                FileModifiedEvent,
            ],
        )
        observer.start()  # watch first, then rescan: nothing can fall between the two
        self._observer = observer
        self._settler.start()
        self.rescan()

    def rescan(self) -> int:
        """Offer every object under the watched folders; the store drops what it has seen."""
        count = 0
        for folder in self.folders():
            try:
                keys = [info.key for info in self.provider.list(folder)]
            except Exception:
                log.exception("could not rescan %s:%s", self.provider.name, folder)
                continue
            for key in keys:
                self._deliver_info(key)
                count += 1
        return count

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._settler.is_alive():
            self._settler.join()

    # -- watchdog callbacks (on the observer's thread) ----------------------------------
    def on_closed(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self._landed(_path(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            self._landed(_path(event.dest_path))

    def on_created(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent) and not isinstance(event, DirCreatedEvent):
            with self._cond:
                self._pending[_path(event.src_path)] = time.monotonic()
                self._cond.notify_all()

    def on_opened(self, event: FileSystemEvent) -> None:
        # open(O_CREAT) gives "created" then "opened": a writer holds the file until it
        # closes it, so it must not settle early. A file moved in is never opened here.
        if isinstance(event, FileOpenedEvent):
            path = _path(event.src_path)
            with self._cond:
                if self._pending.pop(path, None) is not None:
                    self._writing.add(path)

    def on_closed_no_write(self, event: FileSystemEvent) -> None:
        # Only read after all (someone looked at a moved-in file): let it settle again.
        if isinstance(event, FileClosedNoWriteEvent):
            path = _path(event.src_path)
            with self._cond:
                if path in self._writing:
                    self._writing.discard(path)
                    self._pending[path] = time.monotonic()
                    self._cond.notify_all()

    def on_modified(self, event: FileSystemEvent) -> None:
        # Writes to a file that appeared before its folder was watched keep it unsettled.
        if isinstance(event, FileModifiedEvent):
            path = _path(event.src_path)
            with self._cond:
                if path in self._pending:
                    self._pending[path] = time.monotonic()

    # -- delivery -----------------------------------------------------------------
    def _landed(self, path: Path) -> None:
        with self._cond:
            self._pending.pop(path, None)
            self._writing.discard(path)
        key = self.provider.key_of(path)
        if key is not None:
            self._deliver_info(key)

    def _deliver_info(self, key: str) -> None:
        if self._sink is None:
            return
        try:
            info = self.provider.stat(key)
            if info is not None:
                self._sink(self.provider.name, info)
        except Exception:
            # Not acknowledged: the rescan on the next start offers it again.
            log.exception(
                "could not record %s:%s; it is picked up on the next start",
                self.provider.name,
                key,
            )

    def _settle_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                ready = [p for p, t in self._pending.items() if now - t >= self.settle]
                for path in ready:
                    del self._pending[path]
                if not ready:
                    nearest = min(self._pending.values(), default=None)
                    timeout = None if nearest is None else self.settle - (now - nearest)
                    self._cond.wait(timeout)
                    continue
            for path in ready:
                self._landed(path)


def _path(raw: str | bytes) -> Path:
    return Path(raw.decode() if isinstance(raw, bytes) else raw)
