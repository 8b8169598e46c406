"""The spawner: a small process that starts the process runtime's jobs when the platform
runs as root, each as an unprivileged user of its own.

It lives in a mount namespace of its own, where the platform's data folder (store,
secrets, payloads, local storage) is an empty folder but for the work folders, and where
folders on the way to the interpreter that an unprivileged user could not enter (pyenv
under /root) are empty but for the interpreter. A job it starts: its own session and
uid (and gid, no supplementary groups), no capabilities, `no_new_privs`, a process limit.
When a job's script ends, every process of its uid is killed before its end is reported,
so nothing it started (`setsid -f` included) outlives it; when the platform dies, the
spawner sees its socket close and kills every job it started.

This file runs as a script (`python -I -S spawner.py FD CONFIG`, standard library only,
no ondrop import, so it starts in milliseconds) and is imported by the platform for
`Spawner`, its client. Messages are JSON over a SOCK_SEQPACKET socket pair, a job's log
passed along as a file descriptor.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MESSAGE = 8 << 20  # largest message: a job's environment, which fits the argument limit
NPROC = 4096  # processes a job's user may have at once (a fork bomb stops there)

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND, MS_REC, MS_SLAVE = 4096, 16384, 1 << 19
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
SO_SNDBUFFORCE = 32
CHILDREN = "/proc/thread-self/children"  # the spawner is one thread
# Dispositions a job starts with as they were before Python (which ignores SIGPIPE and
# SIGXFSZ) and the spawner (SIGINT) changed them.
RESET_SIGNALS = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ)


# -- the platform's side ------------------------------------------------------------------
class SpawnerError(OSError):
    """The spawner could not be started, or is gone."""


@dataclass
class Spawned:
    """A job the spawner started: its pid (and process group), and its end."""

    pid: int = 0
    error: str = ""
    status: int = 0
    lost: bool = False  # the spawner died first: what the job started may still run
    started: threading.Event = field(default_factory=threading.Event, repr=False)
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None) -> int | None:
        """The exit status (negative: the signal that killed it) once the script ended
        and nothing of its user runs any more; None after `timeout` seconds."""
        return self.status if self.ended.wait(timeout) else None


class Spawner:
    """The platform's handle on the spawner process: start jobs, wait for their end, kill
    what a user left. Thread-safe; one reader thread takes the spawner's messages."""

    def __init__(self, hide: Sequence[Path], show: Sequence[Path]) -> None:
        self.hide = [str(p) for p in hide]
        self.show = [str(p) for p in show]
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs: dict[str, Spawned] = {}
        self._calls: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._serial = 0

    def _started(self) -> socket.socket:
        with self._lock:
            if self._sock is not None:
                return self._sock
            if self._proc is not None:  # one that died: gone with its jobs, which it killed
                self._proc.wait()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            # A message is sent whole: room for the largest environment (root may force it).
            ours.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, MESSAGE)
            config = json.dumps({"hide": self.hide, "show": self.show})
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", __file__, str(theirs.fileno()), config],
                    pass_fds=[theirs.fileno()],
                    env={"PATH": os.defpath},  # none of the platform's secrets
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C to the platform is not its business
                )
            finally:
                theirs.close()
            first = json.loads(ours.recv(MESSAGE) or b'{"error": "it exited at once"}')
            if "error" in first:
                ours.close()
                self._proc.wait()
                raise SpawnerError(f"cannot start the job spawner: {first['error']}")
            self._sock = ours
            threading.Thread(target=self._read, args=(ours,), name="spawner", daemon=True).start()
            return ours

    def ready(self) -> None:
        """Start the spawner now rather than for the first job; SpawnerError when it
        cannot be started (no mount namespace here, say)."""
        self._started()

    def start(
        self,
        key: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        uid: int,
        log_fd: int,
    ) -> Spawned:
        """Start `argv` for the job `key` as `uid`, its output to `log_fd`. Raises OSError
        when it cannot."""
        sock = self._started()
        job = Spawned()
        with self._lock:
            self._jobs[key] = job
        request: dict[str, Any] = {"op": "run", "key": key, "argv": list(argv), "env": dict(env)}
        request |= {"cwd": str(cwd), "uid": uid}
        try:
            sock.sendmsg(
                [json.dumps(request).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))],
            )
        except OSError as exc:
            self._forget(key)
            raise SpawnerError(f"the job spawner is gone ({exc.strerror})") from None
        job.started.wait()
        if job.error:
            self._forget(key)
            raise OSError(job.error)
        return job

    def kill_user(self, uid: int) -> None:
        """Kill every process of `uid` (what a platform that died left)."""
        reply = self._call({"op": "kill", "uid": uid})
        if "error" in reply:
            raise SpawnerError(reply["error"])

    def close(self) -> None:
        """Stop the spawner: whatever it started is killed."""
        with self._lock:
            sock, proc, self._sock = self._sock, self._proc, None
        if sock is not None:
            with contextlib.suppress(OSError):  # wakes our reader; the spawner sees the end
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if proc is not None:
            proc.wait()

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        sock = self._started()
        done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        with self._lock:
            self._serial += 1
            request["call"] = call = str(self._serial)
            self._calls[call] = done
        try:
            sock.send(json.dumps(request).encode())
        except OSError as exc:
            with self._lock:
                self._calls.pop(call, None)
            raise SpawnerError(f"the job spawner is gone ({exc.strerror})") from None
        done[0].wait()
        return done[1][0]

    def _forget(self, key: str) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                if "status" in message:
                    job = self._jobs.pop(message.get("key", ""), None)
                else:
                    job = self._jobs.get(message.get("key", ""))
                call = self._calls.pop(message.get("call", ""), None)
            if call is not None:
                call[1].append(message)
                call[0].set()
            elif job is not None and "status" in message:
                job.status = message["status"]
                job.ended.set()
            elif job is not None:
                job.pid, job.error = message.get("pid", 0), message.get("error", "")
                job.started.set()
        gone = "the job spawner is gone"
        with self._lock:  # whoever waits learns it: their jobs are lost with it
            jobs, calls = list(self._jobs.values()), list(self._calls.values())
            self._jobs, self._calls = {}, {}
            if self._sock is sock:  # not closed by us: the next call starts a new spawner
                self._sock = None
                sock.close()
        for job in jobs:
            if not job.started.is_set():
                job.error = gone
                job.started.set()
            job.status, job.lost = -signal.SIGKILL, True
            job.ended.set()
        for event, reply in calls:
            reply.append({"error": gone})
            event.set()


# -- the spawner's side --------------------------------------------------------------------
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _searchable(folder: str) -> bool:
    """Whether a user that neither owns `folder` nor is in its group may pass through it."""
    return bool(os.stat(folder).st_mode & 0o001)


def masks(hide: Iterable[str], show: Iterable[str]) -> list[str]:
    """The folders to cover with an empty tmpfs: those in `hide`, and for each folder of
    `show`, the first folder on its way that an unprivileged user cannot pass, outermost
    first, none inside another."""
    found = set(hide)
    for path in show:
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            folder = str(Path(*parts[:depth]))
            if not _searchable(folder):
                found.add(folder)
                break
    outer: list[str] = []
    for folder in sorted(found, key=lambda f: len(Path(f).parts)):
        if not any(Path(folder).is_relative_to(o) for o in outer):
            outer.append(folder)
    return outer


def _enter_namespace(hide: list[str], show: list[str]) -> None:
    """This process's own mount namespace: `hide` and the unpassable folders covered, the
    folders of `show` (the work folders, the interpreter) bound back at their own place."""
    libc = _libc()
    covered = masks(hide, show)
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    # Mounts made on the host later (a provider's network share) still show here.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    # Held open before they are covered (and in this namespace: a mount of another one
    # cannot be bound here), to be bound back from.
    kept = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in show}
    for folder in covered:
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        _check(
            libc.mount(b"tmpfs", folder.encode(), b"tmpfs", flags, b"mode=0755,size=64k"),
            f"mount a tmpfs on {folder}",
        )
    for path, fd in kept.items():
        if any(Path(path).is_relative_to(folder) for folder in covered):
            os.makedirs(path, exist_ok=True)
            source = f"/proc/self/fd/{fd}".encode()
            _check(libc.mount(source, path.encode(), None, MS_BIND | MS_REC, None), f"bind {path}")
        os.close(fd)


def _start(request: dict[str, Any], log_fd: int) -> int:
    """Start the job's script as its user; its pid. Raises OSError when it cannot.

    posix_spawn (a vfork, no copy of this process) with POSIX_SPAWN_RESETIDS: for the
    call, this process's real uid and gid are the job's, which the child takes for its
    effective ones and, on exec, for all of them, with no capability left. The job's uid
    has no process yet, so nothing can signal us meanwhile. What the child must not have
    it never gets: no groups, no_new_privs, the process limit and the umask are this
    process's own, set at start; the received log is closed after its dup2."""
    uid = int(request["uid"])
    if uid <= 0:
        raise OSError(f"refusing to run a job as uid {uid}")
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
        (os.POSIX_SPAWN_CLOSE, log_fd),
    ]
    argv = request["argv"]
    os.chdir(request["cwd"])
    try:
        os.setresgid(uid, 0, 0)
        os.setresuid(uid, 0, 0)
        try:
            return os.posix_spawn(
                argv[0],
                argv,
                request["env"],
                file_actions=actions,
                setsid=True,
                resetids=True,
                setsigdef=RESET_SIGNALS,
            )
        finally:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
    finally:
        os.chdir("/")


def _left_running(uid: int) -> bool:
    """Whether a process of `uid` is still there after its job's script ended. We are
    its subreaper: when the script ended, whatever it left became our child, and a child
    of ours stays listed (a zombie at worst) until we reap it, so a process of `uid` is
    left only if one of our children is of `uid`. True when that cannot be read."""
    try:
        with open(CHILDREN) as f:
            children = f.read().split()
    except OSError:
        return True
    for pid in children:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                return True
    return False


def _kill_user(uid: int) -> None:
    """Kill every process of `uid`: a child of ours becomes that user and signals all it
    may (kill -1). The kernel signals them all under one lock and fails a fork whose
    parent it signalled, so one call leaves no process of the user that could run on."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def serve(sock: socket.socket) -> None:
    """Take requests until the platform's end of `sock` closes, then kill every job."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    jobs: dict[int, tuple[str, int]] = {}  # pid -> (key, uid)

    def reap() -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in jobs:
                key, uid = jobs.pop(pid)
                if _left_running(uid):  # what the script left running ends with it
                    _kill_user(uid)
                sock.send(json.dumps({"key": key, "status": _status(wait_status)}).encode())

    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            reap()
        if sock.fileno() not in ready:
            continue
        data, fds, _flags, _addr = socket.recv_fds(sock, MESSAGE, 4, socket.MSG_CMSG_CLOEXEC)
        if not data:
            break
        request = json.loads(data)
        try:
            if request["op"] == "run":
                try:
                    pid = _start(request, fds[0])
                except OSError as exc:
                    reply: dict[str, Any] = {"error": exc.strerror or str(exc)}
                else:
                    jobs[pid] = (request["key"], int(request["uid"]))
                    reply = {"pid": pid}
                reply["key"] = request["key"]
            else:  # kill
                _kill_user(int(request["uid"]))
                reply = {"call": request["call"], "done": True}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())
    for _key, uid in jobs.values():
        _kill_user(uid)


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    sock.set_inheritable(False)  # no job may speak for the spawner
    config = json.loads(argv[2])
    try:
        _enter_namespace(config["hide"], config["show"])
    except OSError as exc:
        sock.send(json.dumps({"error": str(exc)}).encode())
        return 1
    # What a job leaves when its script ends comes to us, to be reaped, not to the
    # machine's init (which may not reap at all).
    _check(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    # What every job inherits: no groups, no way to gain privileges by exec (setuid
    # files), a bound on its user's processes (a fork bomb stops there), its files its own.
    os.setgroups([])
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    os.umask(0o077)
    sock.send(b'{"ready": true}')
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
