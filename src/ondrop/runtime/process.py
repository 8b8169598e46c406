"""`process`: the script runs on the host, in its own process group, in its work folder.

No image, no limits but the timeout: for scripts you trust on a machine you own.
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
PID_FILE = "pid"
RECORD_WIDTH = 48  # bytes of the pid file: a pid and a start time, padded


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
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(spec.log, flags, 0o600)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=spec.workdir,
                env={**base_environment(), **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return RunResult(None, f"cannot start the script: {exc.strerror}", 0.0)
        finally:
            os.close(out)
        with self._lock:
            self._running[spec.job_id] = proc
        # Who to kill if this platform dies: the process group, known by its start time.
        try:
            _record(spec.workdir / PID_FILE, f"{proc.pid} {_start_time(proc.pid)}")
        except OSError as exc:  # the job runs on; only a crash of the platform would miss it
            log.warning("job %s: cannot write its pid file (%s)", spec.job_id, exc.strerror)
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


def _record(path: Path, text: str) -> None:
    """Write `text` over the start of `path`, padded to a fixed width: in a work folder kept
    from an earlier job the file is overwritten in place, neither made nor truncated."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600
    )
    try:
        os.pwrite(fd, text.ljust(RECORD_WIDTH).encode(), 0)
    finally:
        os.close(fd)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot, or '' when there is none."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        stat = os.read(fd, 4096).decode()
    finally:
        os.close(fd)
    return stat.rsplit(")", 1)[1].split()[19]


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
