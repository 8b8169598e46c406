"""`process`: the script runs on the host, in its own session, in its work folder.

No image and no limits but the timeout. When the platform runs as root, each job runs as
an unprivileged user of its own (a uid from `ONDROP_JOB_UIDS`), started by the spawner
(spawner.py) in a mount namespace where the data folder is hidden, and everything of
that uid is killed when the job ends. Otherwise jobs run as the platform's own user.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ondrop.jobs import Cause
from ondrop.runtime.base import (
    RunResult,
    RunSpec,
    Runtime,
    ended,
    script_command,
    wait_exit,
)
from ondrop.runtime.spawner import Spawned, Spawner

log = logging.getLogger(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
PID_FILE = "pid"
RECORD_WIDTH = 48  # bytes of the pid file: a pid, a start time and a uid, padded
FIRST_AUTO_UID = 2_000_000_000  # where the `auto` blocks of job users begin
AUTO_BLOCKS, AUTO_SIZE = 4096, 1024
SPAWNER_DIED = "the job spawner died while the job ran; it runs again"


class JobUsers:
    """The uids isolated jobs run as, one of its own for each running job, so that no job
    can signal, trace or read the files of another."""

    def __init__(self, first: int, count: int) -> None:
        if first <= 0 or count <= 0:
            raise ValueError(f"job uids {first}-{first + count - 1} must be above 0")
        self.uids = range(first, first + count)
        self._free = list(reversed(self.uids))
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str, data: Path) -> JobUsers:
        """`FIRST-LAST`, or `auto`: a block of 1,024 uids from 2,000,000,000 up, chosen by
        the data folder, so that two platforms on one machine use different ones."""
        text = text.strip()
        if text in ("", "auto"):
            tag = int(hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:8], 16)
            return cls(FIRST_AUTO_UID + tag % AUTO_BLOCKS * AUTO_SIZE, AUTO_SIZE)
        first, sep, last = text.partition("-")
        if not (sep and first.strip().isdigit() and last.strip().isdigit()):
            raise ValueError(f"job uids {text!r}: expected FIRST-LAST (numbers) or auto")
        return cls(int(first), int(last) - int(first) + 1)

    def take(self) -> int | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)

    def __str__(self) -> str:
        return f"{self.uids.start}-{self.uids.stop - 1}"


@dataclass(frozen=True)
class Isolation:
    spawner: Spawner
    users: JobUsers


class _Started(Protocol):
    """A running script: its pid (and process group), and how to wait for its end."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None) -> int | None: ...


@dataclass(frozen=True)
class _Child:
    """A script started here, as a child of the platform."""

    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None) -> int | None:
        return self.proc.wait() if timeout is None else wait_exit(self.proc, timeout)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, isolation: Isolation | None = None) -> None:
        self.isolation = isolation
        self.problem = ""  # why isolated jobs cannot run, once the spawner failed
        self._running: dict[str, _Started] = {}
        self._stopped: set[str] = set()
        self._starting: set[str] = set()  # jobs whose process is being started
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.isolation is None:
            return "scripts run on this machine as the platform's user, not isolated from it"
        if self.problem:
            return f"cannot isolate jobs, so none runs: {self.problem}"
        return (
            "scripts run on this machine, each as an unprivileged user of its own "
            f"(uids {self.isolation.users}), the data folder hidden"
        )

    def run(self, spec: RunSpec) -> RunResult:
        started = time.monotonic()
        argv = script_command(spec.script, str(spec.script))
        env = {**base_environment(), **spec.env}
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(spec.log, flags, 0o600)
        uid = 0
        with self._lock:
            self._starting.add(spec.job_id)
        try:
            if self.isolation is None:
                job: _Started = _Child(
                    subprocess.Popen(
                        argv,
                        cwd=spec.workdir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            else:
                uid = self._take_user()
                env["HOME"] = str(spec.workdir / "tmp")  # the platform's own is hidden
                modes = _lend(spec.workdir, uid)
                try:
                    job = self.isolation.spawner.start(
                        spec.job_id, argv, env, spec.workdir, uid, out
                    )
                except OSError:
                    _take_back(spec.workdir, modes)
                    raise
        except OSError as exc:
            with self._lock:
                self._starting.discard(spec.job_id)
                self._stopped.discard(spec.job_id)
            if uid:
                self.isolation.users.give(uid)  # type: ignore[union-attr]
            reason = f"cannot start the script: {exc.strerror or exc}"
            return RunResult(None, reason, 0.0, Cause.INTERNAL)
        finally:
            os.close(out)
        with self._lock:
            self._starting.discard(spec.job_id)
            self._running[spec.job_id] = job
            early = spec.job_id in self._stopped  # stopped while its process was starting
        if early:
            threading.Thread(target=self._kill, args=(job,), daemon=True).start()
        # Who to kill if this platform dies: the process group known by its start time,
        # and the job's user.
        try:
            _record(spec.workdir / PID_FILE, f"{job.pid} {_start_time(job.pid)} {uid}")
        except OSError as exc:  # the job runs on; only a crash of the platform would miss it
            log.warning("job %s: cannot write its pid file (%s)", spec.job_id, exc.strerror)
        try:
            status = job.wait(spec.timeout)
            timed_out = status is None
            if status is None:
                self._kill(job)
                status = job.wait(None)
            assert status is not None
            code = status
            if uid == 0:
                _kill_group(job.pid, signal.SIGKILL)  # children that outlived the script
        finally:
            with self._lock:
                self._running.pop(spec.job_id, None)
                stopped = spec.job_id in self._stopped
                self._stopped.discard(spec.job_id)
            lost = isinstance(job, Spawned) and job.lost
            if lost:  # its spawner died before it could kill what the job left
                self._kill_user(uid)
            if uid:  # every process of the user is gone
                _take_back(spec.workdir, modes)
                self.isolation.users.give(uid)  # type: ignore[union-attr]
        duration = time.monotonic() - started
        if lost and not stopped:
            return RunResult(None, SPAWNER_DIED, duration, Cause.STOPPED)
        return ended(code, duration, spec.timeout, stopped=stopped, timed_out=timed_out)

    def _take_user(self) -> int:
        assert self.isolation is not None
        if self.problem:
            raise OSError(f"the job cannot be isolated: {self.problem}")
        uid = self.isolation.users.take()
        if uid is None:
            raise OSError(f"every job uid ({self.isolation.users}) is in use")
        return uid

    def _kill(self, job: _Started) -> None:
        _kill_group(job.pid, signal.SIGTERM)
        if job.wait(KILL_GRACE) is None:
            _kill_group(job.pid, signal.SIGKILL)

    def stop(self, job_id: str) -> None:
        with self._lock:
            job = self._running.get(job_id)
            if job is None:
                if job_id in self._starting:  # killed as soon as its process is known
                    self._stopped.add(job_id)
                return
            self._stopped.add(job_id)
        threading.Thread(target=self._kill, args=(job,), daemon=True).start()

    def stop_all(self, force: bool = False) -> None:
        with self._lock:
            jobs = list(self._running.items())
            self._stopped.update(job_id for job_id, _ in jobs)
        for job_id, job in jobs:
            if force:
                _kill_group(job.pid, signal.SIGKILL)
            else:
                self.stop(job_id)

    def reap(self, workdir: Path) -> bool:
        try:
            pid_text, start, *user = (workdir / PID_FILE).read_text().split()
            pid, uid = int(pid_text), int(user[0]) if user else 0
        except (OSError, ValueError):
            return False
        alive = _start_time(pid) == start
        if uid and self.isolation is not None and uid in self.isolation.users.uids:
            self._kill_user(uid)  # the script and whatever it left, in any session
        elif alive:
            _kill_group(pid, signal.SIGKILL)
        return alive

    def clean(self) -> None:
        """Kill what any job user of this platform left running (a platform that died),
        in whatever session, whatever its work folder became."""
        if self.isolation is None:
            return
        try:  # started now, so that a platform that cannot isolate jobs says so at start
            self.isolation.spawner.ready()
        except OSError as exc:
            self.problem = str(exc)
            log.error("process runtime: cannot isolate jobs, so none will run: %s", exc)
            return
        for uid in sorted(_users_running(self.isolation.users.uids)):
            self._kill_user(uid)

    def _kill_user(self, uid: int) -> None:
        assert self.isolation is not None
        try:
            self.isolation.spawner.kill_user(uid)
        except OSError as exc:
            self.problem = str(exc)
            log.error("process runtime: cannot isolate jobs, so none will run: %s", exc)

    def close(self) -> None:
        if self.isolation is not None:
            self.isolation.spawner.close()


PARTS_LENT = {"input": False, "output": True, "tmp": True}  # part -> the job's own


def _lend(workdir: Path, uid: int) -> dict[Path, int]:
    """Let the job's user into its work folder: read the folder and its input, write its
    output and tmp folders; nobody else (other job users) gets in. The modes it had."""
    modes = {}
    for path, own in [(workdir, False), *((workdir / p, o) for p, o in PARTS_LENT.items())]:
        modes[path] = os.stat(path, follow_symlinks=False).st_mode & 0o7777
        os.chown(path, uid if own else 0, uid, follow_symlinks=False)
        os.chmod(path, 0o700 if own else 0o750, follow_symlinks=False)
    return modes


def _take_back(workdir: Path, modes: dict[Path, int]) -> None:
    """The work folder is the platform's alone again, as it was (nothing of the job runs)."""
    for path, mode in modes.items():
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, mode, follow_symlinks=False)


def _users_running(uids: range) -> set[int]:
    """The uids in `uids` that own a process now."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                owner = entry.stat(follow_symlinks=False).st_uid
                if owner in uids:
                    found.add(owner)
    return found


def interpreter_folders() -> list[Path]:
    """The folders a job's `python3` (the platform's interpreter and its environment)
    needs: shown to isolated jobs even where they lie under a folder jobs cannot enter."""
    folders = {Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix)}
    return sorted(folders)


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
