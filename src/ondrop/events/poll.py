"""Poll a store that cannot push events (plain S3, WebDAV): list the input folders every
interval and offer each object to the sink, which drops the versions the store has
seen. The store is the cursor: a restart does not process anything twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ondrop.errors import OndropError
from ondrop.events.base import EventSource, Sink
from ondrop.storage.base import StorageProvider

log = logging.getLogger(__name__)
JOIN_TIMEOUT = 5.0
BATCH = 500  # objects recorded in one transaction of the store


class Poller(EventSource):
    def __init__(
        self, provider: StorageProvider, folders: Callable[[], list[str]], interval: float
    ) -> None:
        self.provider = provider
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
                infos = list(self.provider.list(folder))
            except Exception as exc:  # a listing must never end the poller
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
