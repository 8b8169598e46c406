"""Poll a store that cannot push events (plain S3, WebDAV): list the input folders every
interval and offer each object to the sink, which drops the versions the store has
seen. The store is the cursor: a restart does not process anything twice.

Names that start with a dot below an input folder are a writer's temporary ones (it
renames them when done): no listing that starts jobs offers them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ondrop.errors import OndropError
from ondrop.events.base import EventSource, Sink
from ondrop.storage.base import ObjectInfo, StorageProvider
from ondrop.storage.local import LocalStorage

log = logging.getLogger(__name__)
JOIN_TIMEOUT = 5.0
BATCH = 500  # objects recorded in one transaction of the store


def hidden(key: str, folder: str) -> bool:
    """Whether `key`, in the input folder `folder`, has a name starting with a dot below it."""
    rest = key[len(folder) + 1 :] if folder else key
    return rest.startswith(".") or "/." in rest


def listing(provider: StorageProvider, folder: str) -> list[ObjectInfo]:
    """What a listing that starts jobs offers of `folder`: its objects, no dot names, and
    for a local folder its links too, to be refused."""
    found = provider.scan(folder) if isinstance(provider, LocalStorage) else provider.list(folder)
    return [info for info in found if not hidden(info.key, folder)]


class Poller(EventSource):
    def __init__(
        self,
        provider: StorageProvider,
        folders: Callable[[], list[str]],
        interval: float,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.on_error = on_error  # told the provider's name when a listing fails
        self.folders = folders
        self.interval = interval
        self._sink: Sink | None = None
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(
            target=self._loop, name=f"ondrop-poll-{provider.name}", daemon=True
        )

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT)  # a hanging store must not hold the shutdown

    def poll(self) -> int:
        """One pass over every input folder; returns how many objects were offered."""
        offered = 0
        for folder in self.folders():
            try:
                infos = listing(self.provider, folder)
            except Exception as exc:  # a listing must never end the poller
                if self.on_error is not None:
                    self.on_error(self.provider.name)
                if not self._failing:
                    if isinstance(exc, OndropError):
                        log.warning("%s; polling again every %g s", exc, self.interval)
                    else:
                        log.exception(
                            "listing %s:%s failed; polling again every %g s",
                            self.provider.name,
                            folder,
                            self.interval,
                        )
                self._failing = True
                continue
            if self._failing:
                log.info("%s answers again", self.provider.name)
                self._failing = False
            for start in range(0, len(infos), BATCH):
                if self._stop.is_set() or self._sink is None:
                    return offered
                batch = infos[start : start + BATCH]
                try:
                    self._sink(self.provider.name, batch)
                    offered += len(batch)
                except Exception:
                    log.exception(
                        "could not record %d object(s) of %s from %s on; offered again next time",
                        len(batch),
                        self.provider.name,
                        batch[0].key,
                    )
        return offered

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # folders() of a service being removed, and the like
                log.exception("polling %s failed; trying again", self.provider.name)
            if self.interval <= 0:
                return  # one pass at start: the store pushes the rest
            self._stop.wait(self.interval)
