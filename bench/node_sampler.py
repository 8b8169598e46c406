"""What the nodes of a loopback Ray cluster hold, from /proc (the figures psutil reads):
every process of the nodes' sessions and everything those processes started (a job's
script may run in a session, and as a user, of its own), their resident and proportional
memory, and apart those of the Ray workers running jobs, sampled in a thread while a
workload runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    at: float  # time.time(), to set beside the jobs' own clocks
    processes: int
    rss: int  # bytes, summed: a shared library counts once per process
    pss: int  # bytes, summed: each shared page split among the processes that map it
    workers: int = 0  # Ray workers running a job now
    worker_rss: int = 0  # theirs and their descendants' (the job's script, a spawner)
    worker_pss: int = 0


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent, session) of `pid`, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[3])


def _tree() -> tuple[dict[int, int], dict[int, list[int]]]:
    """Every live process's session, and each process's children."""
    sessions: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (info := _stat(entry.name)) is None:
            continue
        pid, (parent, session) = int(entry.name), info
        sessions[pid] = session
        children.setdefault(parent, []).append(pid)
    return sessions, children


def _below(roots: Iterable[int], children: dict[int, list[int]]) -> list[int]:
    """`roots` and all their descendants."""
    seen, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return sorted(seen)


def members(sessions: Iterable[int]) -> list[int]:
    """The live processes of `sessions` and all their descendants."""
    wanted = set(sessions)
    found, children = _tree()
    return _below([pid for pid, session in found.items() if session in wanted], children)


def _memory(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:  # it ended meanwhile
        pass
    return rss, pss


def _command(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []


def sample(sessions: Iterable[int], workers: tuple[bytes, ...] = ()) -> Sample:
    """The nodes of `sessions` now; `workers`: how the command lines of the Ray workers
    that run the jobs begin (`ray::run_task`), whose processes are also summed apart."""
    wanted = set(sessions)
    found, children = _tree()
    pids = _below([pid for pid, session in found.items() if session in wanted], children)
    rss = pss = 0
    roots = []
    for pid in pids:
        r, p = _memory(pid)
        rss, pss = rss + r, pss + p
        command = _command(pid)
        if workers and command and command[0].startswith(workers):
            roots.append(pid)
    worker_rss = worker_pss = 0
    for pid in _below(roots, children):
        r, p = _memory(pid)
        worker_rss, worker_pss = worker_rss + r, worker_pss + p
    return Sample(time.time(), len(pids), rss, pss, len(roots), worker_rss, worker_pss)


class Sampler:
    """Samples `sessions` every `every` seconds in a thread, from start() until stop()."""

    def __init__(
        self,
        sessions: Callable[[], list[int]],
        every: float,
        workers: tuple[bytes, ...] = (),
    ) -> None:
        self.sessions, self.every, self.workers = sessions, every, workers
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(sample(self.sessions(), self.workers))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def settled(sessions: Callable[[], list[int]], quiet: float = 3.0, limit: float = 60.0) -> Sample:
    """A sample once the nodes' process count has not changed for `quiet` seconds (Ray
    ends idle workers a while after a burst), or after `limit` seconds."""
    deadline = time.monotonic() + limit
    last = sample(sessions())
    since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.5)
        now = sample(sessions())
        if now.processes != last.processes:
            since = time.monotonic()
        last = now
    return last
