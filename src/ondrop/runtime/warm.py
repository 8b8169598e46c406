"""Warm containers: kept between the jobs of a service that asks (`warm: <seconds>`), one
job at a time each, and removed after that many seconds idle.

A warm container's first process is `sleep`; each job is exec'd into it (crun exec: a
few milliseconds, where a fresh container also costs its namespaces, mounts, cgroup and
seccomp filter). The job's input, output and script are moved into the folder the
container sees as /ondrop, and its outputs moved back out afterwards. Between jobs
nothing is left: /ondrop, /tmp, /run and /dev/shm are host folders emptied after each
job, the image and /dev are read-only, and a job that leaves a process behind, times
out, is killed or runs out of memory takes its container with it. What the kernel keeps
per IPC namespace (System V shared memory, POSIX message queues) is shared by the jobs
of one warm container.

A service may also ask for containers kept ready (`synchronous.min_scale`): that many of
its containers, idle or running a job, exist at all times from apply on; one that goes
(a job took it with it) is replaced, and idle ones beyond them go after `warm` seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ondrop.errors import OndropError
from ondrop.runtime.base import alive
from ondrop.runtime.cgroups import JobCgroup
from ondrop.runtime.folders import empty_folder
from ondrop.runtime.oci import OciRuntime

log = logging.getLogger(__name__)

# The folders of a warm container that jobs may write, emptied after each job, and where
# the container sees them.
CLEARED = {"slot": "/ondrop", "tmp": "/tmp", "run": "/run", "shm": "/dev/shm"}
JOB_PARTS = ("input", "output", "script")  # what a job's work folder lends the slot
RETRY = 30.0  # seconds before a container kept ready that could not start is tried again
ALIVE_EVERY = 5.0  # seconds between looks at whether the idle containers kept ready still run


@dataclass
class WarmContainer:
    name: str
    key: Hashable
    folder: Path  # its host folders (CLEARED), bundle and hosts file
    pid: int  # its first process, on this host
    process: dict[str, Any]  # the bundle's process: each job's starts from it
    cgroup: JobCgroup
    idle_for: float  # seconds it is kept idle
    idle_since: float = field(default=0.0)

    def alive(self) -> bool:
        return alive(self.pid)

    def only_first(self) -> bool:
        """Whether the container holds its first process and nothing else: no process of
        a job, running or exited."""
        return self.cgroup.tasks() == 1 and self.alive()

    def enter(self, workdir: Path) -> None:
        """Lend the job's input, output and script to the container."""
        slot = self.folder / "slot"
        for part in JOB_PARTS:
            os.rename(workdir / part, slot / part)

    def leave(self, workdir: Path) -> bool:
        """Take the job's outputs back and empty every folder the job could write; call it
        once nothing of the job runs. False when something could not be emptied."""
        output = self.folder / "slot" / "output"
        try:
            real = stat.S_ISDIR(os.lstat(output).st_mode)
        except FileNotFoundError:
            real = False
        if real:  # a link the job put there instead could lead anywhere on the host
            os.rename(output, workdir / "output")
        else:
            (workdir / "output").mkdir(exist_ok=True)
        return all([empty_folder(self.folder / part) for part in CLEARED])


class WarmContainers:
    """The idle warm containers by key (service, image and limits), and a thread that
    removes those idle too long."""

    def __init__(self, oci: OciRuntime) -> None:
        self.oci = oci
        self._idle: dict[Hashable, list[WarmContainer]] = {}
        self._live: Counter[Hashable] = Counter()  # containers by key, idle or not
        # service -> (key, how many, how to start one, when to try again)
        self._ready: dict[str, tuple[Hashable, int, Callable[[], WarmContainer], float]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self._closed = False

    def take(self, key: Hashable) -> WarmContainer | None:
        """An idle container for `key`, the most recently used; None when there is none."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                box = idle.pop()
            if box.alive():
                return box
            self.discard(box)  # it died while idle (killed from outside)

    def started(self, box: WarmContainer) -> None:
        """Count `box`, just started, among its key's containers."""
        with self._lock:
            self._live[box.key] += 1

    def give(self, box: WarmContainer) -> None:
        """Keep `box` for the next job of its key."""
        with self._lock:
            if not self._closed:
                box.idle_since = time.monotonic()
                self._idle.setdefault(box.key, []).append(box)
                self._reaping()
                self._changed.notify()
                return
        self.discard(box)

    def discard(self, box: WarmContainer) -> None:
        self.oci.delete(box.name)
        box.cgroup.remove()
        shutil.rmtree(box.folder, ignore_errors=True)
        with self._lock:
            self._live[box.key] -= 1
            if self._live[box.key] <= 0:
                del self._live[box.key]
            self._changed.notify()  # one kept ready is replaced

    def keep_ready(
        self, service: str, key: Hashable, count: int, start: Callable[[], WarmContainer]
    ) -> None:
        """Keep `count` containers of `key` for `service`'s jobs at all times, started by
        `start`, in place of what was kept for it before."""
        with self._lock:
            if self._closed:
                return
            before = self._ready.get(service)
            retry = before[3] if before is not None and before[0] == key else 0.0
            self._ready[service] = (key, count, start, retry)
            self._reaping()
            self._changed.notify()

    def keep_none(self, service: str) -> None:
        """Keep no containers ready for `service`: the idle ones go after `warm` seconds."""
        with self._lock:
            if self._ready.pop(service, None) is not None:
                self._changed.notify()

    def count(self) -> int:
        """Idle containers."""
        with self._lock:
            return sum(len(idle) for idle in self._idle.values())

    def live(self, key: Hashable) -> int:
        """Containers of `key`, idle or running a job."""
        with self._lock:
            return self._live[key]

    def _reaping(self) -> None:
        """Start the thread that removes idle containers and starts those kept ready (under
        the lock)."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="ondrop-warm", daemon=True)
            self._reaper.start()

    def close(self) -> None:
        """Remove every idle container; those given back later are removed at once."""
        with self._lock:
            self._closed = True
            boxes = [box for idle in self._idle.values() for box in idle]
            self._idle.clear()
            self._changed.notify()
            reaper = self._reaper
        for box in boxes:
            self.discard(box)
        if reaper is not None:
            reaper.join(timeout=60)  # it may be removing an expired one

    def _reap(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                floor = {key: count for key, count, _, _ in self._ready.values()}
                expired: list[WarmContainer] = []
                for key, idle in self._idle.items():
                    spare = self._live[key] - floor.get(key, 0)
                    for box in sorted(idle, key=lambda b: b.idle_since):
                        if not box.alive() or (spare > 0 and now - box.idle_since >= box.idle_for):
                            expired.append(box)  # (one killed from outside is replaced)
                            spare -= 1
                for box in expired:
                    self._idle[box.key].remove(box)
                short = [
                    (service, key, start)
                    for service, (key, count, start, retry) in self._ready.items()
                    if self._live[key] < count and retry <= now
                ]
                if not expired and not short:
                    due = [
                        box.idle_since + box.idle_for - now
                        for idle in self._idle.values()
                        for box in idle
                        if self._live[box.key] > floor.get(box.key, 0)
                    ]
                    due += [retry - now for _, _, _, retry in self._ready.values() if retry > now]
                    if self._ready:
                        due.append(ALIVE_EVERY)
                    self._changed.wait(max(0.0, min(due, default=60.0)))
                    continue
            for box in expired:
                log.debug("warm container %s idle for %g s: removed", box.name, box.idle_for)
                self.discard(box)
            for service, key, start in short:
                self._start_ready(service, key, start)

    def _start_ready(self, service: str, key: Hashable, start: Callable[[], WarmContainer]) -> None:
        """Start one container kept ready for `service`; one that cannot start is tried
        again in RETRY seconds, and said why."""
        try:
            box = start()
        except (OndropError, OSError) as exc:
            log.warning(
                "service %s: a container kept ready (synchronous.min_scale) could not start: "
                "%s; tried again in %g s",
                service,
                exc,
                RETRY,
            )
            with self._lock:
                kept = self._ready.get(service)
                if kept is not None and kept[0] == key:
                    self._ready[service] = (*kept[:3], time.monotonic() + RETRY)
            return
        log.debug("warm container %s started, kept ready for service %s", box.name, service)
        self.give(box)
