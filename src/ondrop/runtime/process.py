"""`process`: the script runs on the host, in its own process group, in its work folder.

No image, no limits but the timeout: for scripts you trust on a machine you own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

from ondrop.runtime.base import RunResult, RunSpec, Runtime, describe_exit

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self) -> None:
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def run(self, spec: RunSpec) -> RunResult:
        started = time.monotonic()
        # Through the shebang when there is one, else through /bin/sh, as OSCAR does.
        head = spec.script.read_bytes()[:2]
        argv = [str(spec.script)] if head == b"#!" else ["/bin/sh", str(spec.script)]
        if head == b"#!":
            spec.script.chmod(0o700)
        with spec.log.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.workdir,
                    env=dict(spec.env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                return RunResult(None, f"cannot start the script: {exc.strerror}", 0.0)
        with self._lock:
            self._running[spec.job_id] = proc
        try:
            try:
                code = proc.wait(timeout=spec.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                self._kill(proc)
                code = proc.wait()
                timed_out = True
            _kill_group(proc.pid, signal.SIGKILL)  # children that outlived the script
        finally:
            with self._lock:
                self._running.pop(spec.job_id, None)
                stopped = spec.job_id in self._stopped
                self._stopped.discard(spec.job_id)
        duration = time.monotonic() - started
        if stopped:
            return RunResult(None, "stopped by the platform", duration, interrupted=True)
        if timed_out:
            return RunResult(None, f"timed out after {spec.timeout:g} s", duration)
        return RunResult(code, "" if code == 0 else describe_exit(code), duration)

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

    def stop_all(self) -> None:
        with self._lock:
            jobs = list(self._running)
        for job_id in jobs:
            self.stop(job_id)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
