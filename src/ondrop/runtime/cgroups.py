"""A cgroup per container job that outlives the container, to tell an out-of-memory kill
from other deaths: the job's memory limit is set here, on `ondrop/<name>`, and the OCI
runtime (or the engine) puts the container in a cgroup below it.

The kernel counts the processes it kills for the limit: on cgroup v2 in `memory.events`
(`oom_kill`, including the cgroups below); on v1 only in the killed process's own cgroup,
which the runtime removes with the container, so there an eventfd registered on this
cgroup's `memory.oom_control` (cgroup-v1/memory.rst, "OOM Control") counts its OOMs."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
TOP = "ondrop"


def unified() -> bool:
    return (ROOT / "cgroup.controllers").exists()


class JobCgroup:
    def __init__(self, name: str, memory: int | None) -> None:
        self.name = name
        self.memory = memory
        self._events: int | None = None  # v1: the eventfd the kernel signals on an OOM
        self._seen = (0, 0)  # v2: oom_kill and oom at the last oom_kills()

    @property
    def path(self) -> str:
        """The cgroup's own path (an engine's cgroup parent)."""
        return f"/{TOP}/{self.name}"

    @property
    def container_path(self) -> str:
        """The cgroupsPath to give the OCI runtime."""
        return f"/{TOP}/{self.name}/job"

    def _dirs(self) -> list[Path]:
        return (
            [ROOT / TOP / self.name]
            if unified()
            else [d / TOP / self.name for d in ROOT.iterdir() if (d / "cgroup.procs").exists()]
        )

    def create(self) -> None:
        """Make the job's cgroup with its memory limit (and no swap beyond it)."""
        if self.memory is None:
            return
        if unified():
            top = ROOT / TOP
            top.mkdir(exist_ok=True)
            for parent in (ROOT, top):
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            own = top / self.name
            own.mkdir(exist_ok=True)
            (own / "memory.max").write_text(str(self.memory))
            with contextlib.suppress(OSError):
                (own / "memory.swap.max").write_text("0")
            with contextlib.suppress(OSError):
                (own / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        else:
            own = ROOT / "memory" / TOP / self.name
            own.mkdir(parents=True, exist_ok=True)
            (own / "memory.limit_in_bytes").write_text(str(self.memory))
            with contextlib.suppress(OSError):  # swap accounting may be off
                (own / "memory.memsw.limit_in_bytes").write_text(str(self.memory))
            self._watch(own)

    def _watch(self, own: Path) -> None:
        """v1: have the kernel signal an eventfd on each OOM of this cgroup's limit."""
        events = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            control = os.open(own / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (own / "cgroup.event_control").write_text(f"{events} {control}")
            finally:
                os.close(control)
        except OSError as exc:
            os.close(events)
            log.warning("cannot watch %s for out-of-memory kills: %s", own, exc)
            return
        self._events = events

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory limit since the last call
        (v1: how many times the limit ran out and the kernel's OOM killer ran). Call it
        before remove()."""
        if self.memory is None:
            return 0
        if not unified():
            if self._events is None:
                return 0
            try:
                return os.eventfd_read(self._events)
            except BlockingIOError:
                return 0
        try:
            events = (ROOT / TOP / self.name / "memory.events").read_text()
            counts = {k: int(v) for k, v in (line.split() for line in events.splitlines())}
        except (OSError, ValueError):
            return 0
        # Without kills counted, the cgroup's own count of its limit running out: where
        # cgroup2 is mounted with memory_localevents, `oom_kill` leaves out those below.
        kills = counts.get("oom_kill", 0) - self._seen[0]
        ooms = counts.get("oom", 0) - self._seen[1]
        self._seen = (counts.get("oom_kill", 0), counts.get("oom", 0))
        return kills or ooms

    def tasks(self) -> int | None:
        """How many tasks the container holds now: processes, their threads, and exited
        ones nobody has reaped yet. None when the cgroup cannot be read."""
        own = (ROOT if unified() else ROOT / "pids") / self.container_path.lstrip("/")
        try:
            return int((own / "pids.current").read_text())
        except (OSError, ValueError):
            pass
        try:  # no pids controller there: the processes, less the exited ones
            return len((own / "cgroup.procs").read_text().split())
        except OSError:
            return None

    def remove(self) -> None:
        """Remove the cgroup and those below it that are empty (an engine's may remain)."""
        if self._events is not None:
            os.close(self._events)
            self._events = None
        for own in self._dirs():
            for sub in (own / "job", own):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            if own.is_dir():  # an engine's cgroup left below it: the deepest first
                for below, _, _ in sorted(os.walk(own), reverse=True):
                    with contextlib.suppress(OSError):
                        os.rmdir(below)


def remove_all(prefix: str) -> int:
    """Remove every job cgroup whose name starts with `prefix` (start-up clean-up)."""
    removed = 0
    tops = [ROOT / TOP] if unified() else [d / TOP for d in ROOT.iterdir()]
    for top in tops:
        if not top.is_dir():
            continue
        for own in top.iterdir():
            if own.is_dir() and own.name.startswith(prefix):
                JobCgroup(own.name, None).remove()
                removed += 1
    return removed


def cpu_seconds(pid: int) -> float | None:
    """The CPU time the cgroup of process `pid` (a container's first process: its
    container's) has used, in seconds; None when it cannot be read."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        try:
            if controllers == "" and unified():
                stat = (ROOT / path.lstrip("/") / "cpu.stat").read_text()
                usage = dict(entry.split() for entry in stat.splitlines())
                return int(usage["usage_usec"]) / 1e6
            if "cpuacct" in controllers.split(","):
                for folder in (controllers, "cpuacct", "cpu,cpuacct"):
                    usage_file = ROOT / folder / path.lstrip("/") / "cpuacct.usage"
                    if usage_file.exists():
                        return int(usage_file.read_text()) / 1e9
        except (OSError, ValueError, KeyError):
            return None
    return None
