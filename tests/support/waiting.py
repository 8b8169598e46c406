"""Waiting in tests for what the platform does in the background: a condition to hold,
processes to appear or go."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """What `check` returns once it is true; an AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s")


def processes_with(marker: str) -> list[int]:
    """The pids of the processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def spawners_of(data: Path) -> list[int]:
    """The pids of the job spawners (the process runtime's, as root) of the platform on the
    data folder `data`."""
    found = []
    for pid in processes_with("runtime/spawner.py"):
        try:
            if str(data).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found
