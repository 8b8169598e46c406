"""A cgroup per container job that outlives the container, to tell an out-of-memory kill
from other deaths: the job's memory limit is set here, on `ondrop/<name>`, and the OCI
runtime puts the container in `ondrop/<name>/job` below it."""

from __future__ import annotations

import contextlib
import logging
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

    def out_of_memory(self) -> bool:
        """True when the job hit its memory limit (read after it ended, before remove())."""
        if self.memory is None:
            return False
        try:
            if unified():
                events = (ROOT / TOP / self.name / "memory.events").read_text()
                counts = dict(line.split() for line in events.splitlines())
                return int(counts.get("oom_kill", 0)) > 0 or int(counts.get("oom", 0)) > 0
            own = ROOT / "memory" / TOP / self.name
            control = (own / "memory.oom_control").read_text()
            if "oom_kill 0" not in control and "oom_kill" in control:
                return True
            peak = int((own / "memory.max_usage_in_bytes").read_text())
            return peak >= self.memory * 0.98
        except (OSError, ValueError):
            return False

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
        for own in self._dirs():
            for sub in (own / "job", own):
                with contextlib.suppress(OSError):
                    sub.rmdir()


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
