"""Runtime: how one job's script is isolated and run (`process` on the host, `container`).

The supervisor prepares a work folder and the environment; a runtime only runs
the script there, enforces its time limit, and says how it ended.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ondrop.errors import OndropError
from ondrop.jobs import Cause
from ondrop.quantity import format_bytes


@dataclass(frozen=True)
class RunSpec:
    job_id: str
    script: Path  # the script file, inside `workdir`
    workdir: Path  # the job's folder: input/, output/, tmp/ and the log live here
    env: Mapping[str, str]  # the whole environment of the script
    timeout: float  # seconds
    log: Path  # stdout and stderr, together, go here
    image: str = ""
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    network: bool = False  # may the job reach the network (container runtime)
    gpus: tuple[str, ...] = ()  # GPU device ids given to this job alone
    service: str = ""  # whose job it is: warm containers are kept per service
    warm: float = 0.0  # seconds an idle warm container is kept; 0: a fresh one per job


def alive(pid: int) -> bool:
    """Whether process `pid` runs (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Served(ABC):
    """A replica of an exposed service: a long-running container serving HTTP in a network
    namespace of its own (a loopback device and nothing else)."""

    name: str  # its container's
    pid: int  # its first process, on this host

    def alive(self) -> bool:
        return alive(self.pid)

    @abstractmethod
    def log(self, lines: int) -> str:
        """The last `lines` lines of what it printed."""

    @abstractmethod
    def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after `grace` seconds, then remove it and its folder."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when it never ran or was killed
    reason: str  # '' when it succeeded, else what a person should read
    duration: float
    cause: Cause | None = None  # why it did not succeed; None when it did

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.reason

    @property
    def interrupted(self) -> bool:
        """Stopped by the platform, not by its own fault."""
        return self.cause is Cause.STOPPED


def ended(
    code: int,
    duration: float,
    timeout: float,
    *,
    stopped: bool,
    timed_out: bool,
    memory: int | None = None,
) -> RunResult:
    """What became of a job, in the order a person needs it: stopped by the platform,
    timed out, out of its `memory` (bytes; given only when the kernel killed it for
    that), or its exit status."""
    if stopped:
        return RunResult(None, "stopped by the platform", duration, Cause.STOPPED)
    if timed_out:
        return RunResult(None, f"timed out after {timeout:g} s", duration, Cause.TIMEOUT)
    if memory is not None:
        limit = format_bytes(memory)
        return RunResult(None, f"out of memory (limit {limit})", duration, Cause.OOM)
    if code == 0:
        return RunResult(0, "", duration)
    return RunResult(code, describe_exit(code), duration, Cause.EXIT)


def script_command(script: Path, seen_as: str) -> list[str]:
    """How to run the script file `script`, which the process sees at `seen_as`: through
    its shebang's interpreter when it has one (parsed as the kernel does: the interpreter
    and at most one argument), else through /bin/sh, as OSCAR does.

    The interpreter is started with the script as its argument instead of executing the
    script itself: a file just written is "busy" for exec while any process forked
    meanwhile still holds it open, which happens when jobs start side by side."""
    with script.open("rb") as f:
        first = f.readline(4096)
    if not first.startswith(b"#!"):
        return ["/bin/sh", seen_as]
    interpreter, _, argument = first[2:].decode("utf-8", "replace").strip().partition(" ")
    return [interpreter, *([argument.strip()] if argument.strip() else []), seen_as]


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status of `proc`, or None when it is still running after `timeout` seconds.

    Popen.wait(timeout) polls with growing sleeps (up to 50 ms), which would add tens of
    milliseconds to every short job; a pidfd wakes us the moment the process ends."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            return None
    finally:
        os.close(fd)
    return proc.wait()


def describe_exit(code: int) -> str:
    """ "exit status 3"; "killed by SIGKILL" for a process a signal ended; shells report a
    command a signal ended as 128 + the signal: "exit status 137 (SIGKILL)"."""
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    if 128 < code < 160:
        return f"exit status {code} ({_signal_name(code - 128)})"
    return f"exit status {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Runtime(ABC):
    name: str = ""

    @abstractmethod
    def run(self, spec: RunSpec) -> RunResult:
        """Run the script to its end, its time limit, or until stop() names this job."""

    @abstractmethod
    def stop(self, job_id: str) -> None:
        """Stop a running job (shutdown, cancel); its run() returns interrupted."""

    def inside(self, workdir: Path, path: Path) -> str:
        """Where the script sees `path`, a file or folder in the job's `workdir`."""
        return str(path)

    def clean(self) -> None:
        """Remove what a platform that died left behind beyond work folders (start-up)."""

    def stop_all(self, force: bool = False) -> None:
        """Stop every job this runtime runs; `force`: kill them at once, no grace."""

    def close(self) -> None:
        """Release what is kept between jobs (warm containers); nothing runs any more."""

    def reap(self, workdir: Path) -> bool:
        """Kill what a platform that died left running for the job in `workdir` (start-up).
        True when something was found."""
        return False

    def serve(self, spec: RunSpec) -> Served:
        """Start a replica of an exposed service: the script (or, with an empty script,
        the image's command) as a server, kept until stopped; `spec.timeout` is unused."""
        raise OndropError(f"the {self.name} runtime cannot run exposed services")

    def keep_ready(self, spec: RunSpec, count: int) -> str | None:
        """Keep `count` containers ready for the jobs of `spec.service` (as `spec`
        describes them: image, limits, network) from now on; 0 keeps none. Why it cannot,
        or None."""
        return None if count == 0 else f"the {self.name} runtime keeps no containers ready"

    def describe(self) -> str:
        return self.name
