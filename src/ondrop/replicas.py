"""This control plane's presence in the store: it says it is alive, renews the leases on
the attempts it claimed well inside their length, and takes back the attempts of a
control plane whose leases ran out (it died, or lost the store for longer than a lease).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ondrop.store.base import Replica, Store

log = logging.getLogger(__name__)
LEASE = 30.0  # seconds a claimed attempt is leased for
BEAT = LEASE / 3  # how often the leases are renewed: two beats may fail before they run out
LOOK = 1.0  # seconds between looks for cancels asked by other control planes
ID_FILE = "replica"


def replica_id(data: Path) -> str:
    """This control plane's id: made once for its data folder and kept there, so that a
    restart is the same control plane (and takes its own attempts back at once)."""
    path = data / ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        made = f"{socket.gethostname()}-{secrets.token_hex(4)}"
        path.write_text(made + "\n")
        return made


class Heartbeat:
    def __init__(
        self,
        store: Store,
        replica: str,
        address: str,
        on_requeued: Callable[[], None],
        on_beat: Callable[[], object] | None = None,
        on_cancel: Callable[[str, str], object] | None = None,
    ) -> None:
        self.store = store
        self.on_beat = on_beat  # what else to do at each beat (read changed services)
        # Stops one of this control plane's jobs that another one was asked to cancel
        # (job id, reason); None: no other control plane can ask (the store is its own).
        self.on_cancel = on_cancel
        self.id = replica
        self.address = address
        self.on_requeued = on_requeued  # attempts were taken back: the pools may claim them
        self.since = time.time()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        due = time.monotonic() + BEAT
        while not self._stopping.wait(LOOK if self.on_cancel is not None else BEAT):
            self.cancels()
            if time.monotonic() >= due:
                self.beat()
                due = time.monotonic() + BEAT

    def cancels(self) -> None:
        """Stop the jobs of this control plane that another one was asked to cancel."""
        if self.on_cancel is None:
            return
        try:
            asked = self.store.cancel_requests(self.id)
        except Exception as exc:  # the store is down: the next look asks again
            log.debug("cannot look for cancels asked of this control plane: %s", exc)
            return
        for job_id, reason in asked:
            self.on_cancel(job_id, reason)

    def beat(self) -> None:
        now = time.time()
        try:
            self.store.heartbeat(Replica(self.id, self.address, self.since, now))
            self.store.renew(self.id, now + LEASE)
            taken = self.store.requeue_expired("its control plane stopped renewing it", now)
            if self.on_beat is not None:
                self.on_beat()
        except Exception as exc:
            log.warning(
                "cannot renew this control plane's leases in the store (%s); trying again in %g s",
                exc,
                BEAT,
            )
            return
        if taken:
            log.warning(
                "queued again %d job(s) whose control plane stopped renewing them", len(taken)
            )
            self.on_requeued()

    def alive(self) -> list[Replica]:
        """The control planes on this store that renewed their leases lately."""
        return self.store.replicas(seen_since=time.time() - LEASE)
