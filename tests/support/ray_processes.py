"""The processes of one Ray node on this machine, found through /proc: `ray start` runs in
a session of its own and marks its environment, and the daemons it leaves behind (raylet,
agents, workers; on a head also GCS, monitor, dashboard) inherit both."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

MARKER = "ONDROP_RAY_NODE"  # in the environment of every process of a node: its temp folder


class Unkillable(RuntimeError):
    pass


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # after "pid (comm)": state ppid pgrp sid


def _is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie is gone for us


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def processes_of(session: int, marker: str) -> list[int]:
    """The live pids in `session` or whose environment holds `MARKER=marker`: what one
    `ray start` (run in a session of its own) left running, even a process that started a
    session of its own or one that cleared its environment."""
    wanted = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (pid := int(entry.name)) == os.getpid():
            continue
        if (_session_of(pid) == session or _has_marker(pid, wanted)) and not _is_gone(pid):
            found.append(pid)
    return found


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def kill_all(pids: Sequence[int], timeout: float = 30.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not all(_is_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise Unkillable(f"processes {pids} outlived SIGKILL for {timeout:g} s")
        time.sleep(0.05)
