"""`process`: the script runs on the host, in its own process group, in its work folder.

No image, no limits but the timeout: for scripts you trust on a machine you own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ondrop.runtime.base import (
    RunResult,
    RunSpec,
    Runtime,
    ended,
    script_command,
    wait_exit,
)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
PID_FILE = "pid"


class ProcessRuntime(Runtime):
    name = "process"

    def describe(self) -> str:
        return "scripts run on this machine, no isolation"

    def __init__(self) -> None:
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def run(self, spec: RunSpec) -> RunResult:
        started = time.monotonic()
        argv = script_command(spec.script, str(spec.script))
        with spec.log.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.workdir,
                    env={**base_environment(), **spec.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                return RunResult(None, f"cannot start the script: {exc.strerror}", 0.0)
        with self._lock:
            self._running[spec.job_id] = proc
        # Who to kill if this platform dies: the process group, known by its start time.
        (spec.workdir / PID_FILE).write_text(f"{proc.pid} {_start_time(proc.pid)}")
        try:
            status = wait_exit(proc, spec.timeout)
            timed_out = status is None
            if status is None:
                self._kill(proc)
                status = proc.wait()
            code = status
            _kill_group(proc.pid, signal.SIGKILL)  # children that outlived the script
        finally:
            with self._lock:
                self._running.pop(spec.job_id, None)
                stopped = spec.job_id in self._stopped
                self._stopped.discard(spec.job_id)
        duration = time.monotonic() - started
        return ended(code, duration, spec.timeout, stopped=stopped, timed_out=timed_out)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)

    def stop(self, job_id: str) -> None:
        with self._lock:
            proc = self._running.get(job_id)
            if proc is None:
                return
            self._stopped.add(job_id)
        threading.Thread(target=self._kill, args=(proc,), daemon=True).start()

    def stop_all(self, force: bool = False) -> None:
        with self._lock:
            jobs = list(self._running.items())
            self._stopped.update(job_id for job_id, _ in jobs)
        for job_id, proc in jobs:
            if force:
                _kill_group(proc.pid, signal.SIGKILL)
            else:
                self.stop(job_id)

    def reap(self, workdir: Path) -> bool:
        try:
            pid_text, start = (workdir / PID_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return False
        if _start_time(pid) != start:
            return False  # long gone, and the pid may be someone else's now
        _kill_group(pid, signal.SIGKILL)
        return True


def base_environment() -> dict[str, str]:
    """What a script on the host gets besides its contract: only what it needs, so the
    platform's own secrets stay out of its reach. `python3` is the interpreter running
    ondrop, with the packages installed beside it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"}
    }
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([python_bin, env.get("PATH", "/usr/bin:/bin")])
    return env


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot, or '' when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
