"""Shared fixtures: settings on a temporary data folder, a real platform, and its API
served by uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from ondrop.api.app import create_app
from ondrop.api.auth import Credentials
from ondrop.platform import Platform
from ondrop.settings import Settings
from tests.support.ray_fixtures import cpu_node, gpu_node, ray_cluster, ray_installed

# The real Ray cluster of the backend tests and the Backend contract suite (one a session).
__all__ = ["cpu_node", "gpu_node", "ray_cluster", "ray_installed"]

ADMIN = Credentials("admin", "s3cret-admin")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        {
            "data": tmp_path / "data",
            "admin_password": ADMIN.password,
            "concurrency": 2,
            "grace": 5.0,
            "container_engine": "none",
            "pull": "never",  # no test reaches a registry
            "gpus": "0",  # the same on a machine with GPUs (tests/e2e/test_gpu_e2e.py uses them)
        },
        environ={},
    )


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    p = Platform(settings)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def serving(platform: Platform, sock: socket.socket) -> Iterator[str]:
    """The platform's API served by uvicorn on `sock`, in a thread; yields its URL."""
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(platform, ADMIN, manage=False), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def served(settings: Settings, **changes: object) -> Iterator[str]:
    """Another platform, on `settings` changed by `changes` (a data folder of its own
    beside theirs), started and served; yields its URL."""
    changed = settings.with_(data=Path(settings.data).parent / "other", **changes)
    other = Platform(changed)
    other.start()
    try:
        with serving(other, listening_socket()) as url:
            yield url
    finally:
        other.stop()


@pytest.fixture
def base_url(platform: Platform) -> Iterator[str]:
    with serving(platform, listening_socket()) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client with the admin's credentials."""
    with httpx.Client(base_url=base_url, auth=(ADMIN.user, ADMIN.password), timeout=30) as c:
        yield c


@pytest.fixture
def anon(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client without credentials."""
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The name of a busybox image in podman (built offline on first use)."""
    from tests.support.images import busybox_image

    return busybox_image(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def webdav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real WebDAV server (wsgidav) for the whole session."""
    from tests.support.servers import webdav_server

    with webdav_server(tmp_path_factory.mktemp("webdav")) as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3 server (SeaweedFS) for the whole session."""
    from tests.support.servers import seaweedfs_server

    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A real PostgreSQL server for the whole session (tests.support.servers.Postgres)."""
    from tests.support.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def oneprovider() -> Iterator[object]:
    """The Oneprovider test server (tests.support.oneprovider): a space "space1" and a
    token "t0ken" that may do everything in it."""
    from tests.support.oneprovider import Oneprovider

    with Oneprovider() as server:
        server.add_space("space1")
        server.add_token("t0ken")
        yield server
