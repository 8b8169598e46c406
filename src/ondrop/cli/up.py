"""`ondrop up`: the platform in the foreground until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn
from rich.console import Console
from rich.markup import escape

from ondrop import __version__
from ondrop.api.app import create_app
from ondrop.api.auth import admin_credentials, stored_credentials
from ondrop.client import CREDENTIALS_FILE, ENDPOINT_FILE
from ondrop.errors import OndropError
from ondrop.platform import Platform, platform_folder
from ondrop.settings import Settings, env_name
from ondrop.store.url import shown

console = Console(stderr=True)


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # A line for every request to a store (WebDAV, Onedata) is noise, not news.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    platform_folder(Path(settings.data), "data")  # a file there is said so, first
    before = stored_credentials(Path(settings.data)).get("password")
    kept = bool(before)
    admin = admin_credentials(settings)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        raise OndropError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "choose another port with --port (0 picks a free one)"
        ) from None
    sock.listen(2048)
    port = sock.getsockname()[1]
    host = settings.host if settings.host not in {"0.0.0.0", "::"} else "127.0.0.1"
    url = f"http://{host}:{port}"

    platform = Platform(settings, url=url)
    if platform.object_store is not None:
        console.print("starting the bundled object store (SeaweedFS)...")
    platform.start()
    endpoint = Path(settings.data) / ENDPOINT_FILE
    # Written whole, then renamed: a client never reads half of it.
    partial = endpoint.with_suffix(".partial")
    partial.write_text(json.dumps({"url": url, "user": admin.user, "pid": os.getpid()}))
    partial.replace(endpoint)
    note = _shown_password(settings, kept, admin.password)
    if settings.admin_password and before and before != settings.admin_password:
        note += (
            f" (not the one kept in {Path(settings.data) / CREDENTIALS_FILE}, which no longer "
            "works and was taken out: commands in other shells need this one too)"
        )
    _banner(settings, platform, url, admin.user, note)

    app = create_app(platform, admin, manage=False)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(settings.grace)),
    )
    server = _Server(config)
    stopping = _Stopping(server, platform, settings.grace)
    previous = {sig: signal.signal(sig, stopping.signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        endpoint.unlink(missing_ok=True)
        if not stopping.signals:
            stopping.signal(signal.SIGTERM, None)
        platform.stop(grace=max(0.0, stopping.deadline - time.monotonic()))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print("stopped; nothing accepted was lost")


class _Server(uvicorn.Server):
    """uvicorn, leaving signals to `_Stopping`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Stopping:
    """Ctrl-C (or SIGTERM) once: stop taking requests and starting jobs, let running jobs
    finish within the grace period. Twice: stop running jobs now. Three times: kill them."""

    def __init__(self, server: uvicorn.Server, platform: Platform, grace: float) -> None:
        self.server = server
        self.platform = platform
        self.grace = grace
        self.signals = 0
        self.deadline = time.monotonic() + grace

    def signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only set flags and start threads.
        self.signals += 1
        if self.signals == 1:
            self.deadline = time.monotonic() + self.grace
            console.print(
                f"[bold]stopping[/]: running jobs get up to {self.grace:g} s to finish "
                "(Ctrl-C again stops them now; they run again on the next start)"
            )
            self.server.should_exit = True
            threading.Thread(target=self.platform.begin_stop, daemon=True).start()
        elif self.signals == 2:
            console.print("stopping running jobs now (Ctrl-C again kills them)")
            self.deadline = time.monotonic()
            self.server.force_exit = True
            threading.Thread(target=self.platform.interrupt, daemon=True).start()
        else:
            threading.Thread(target=self.platform.interrupt, args=(True,), daemon=True).start()


def _shown_password(settings: Settings, kept: bool, password: str) -> str:
    """What the banner says of the admin password: the password itself only when it was
    generated on this start (the one moment the user must learn it), else where it is.
    Terminals, journals and CI logs keep what a start prints."""
    kept_in = Path(settings.data) / CREDENTIALS_FILE
    if settings.admin_password:
        variable = env_name("admin_password")
        if os.environ.get(variable) == settings.admin_password:
            return f", password from {variable}"
        return ", password as given with --admin-password"
    if kept:
        return f", password kept in {kept_in}"
    return f" / {password} (generated now; kept in {kept_in}, readable by you only)"


def _banner(
    settings: Settings, platform: Platform, url: str, user: str, password_note: str
) -> None:
    storage = platform.root / "storage"
    console.print(f"[bold green]ondrop {__version__}[/] is up at [bold]{url}[/]")
    console.print(f"  admin      {escape(user + password_note)}")
    console.print(f"  data       {escape(str(settings.data))}")
    if settings.store:
        console.print(f"  store      {escape(shown(settings.store))} (PostgreSQL)")
    if settings.shared_folder:
        console.print(
            f"  shared     {escape(settings.shared_folder)} (local.default, invocation bodies, "
            "/run results: the same for every control plane on the store)"
        )
    if platform.object_store is not None:
        s3 = platform.object_store.provider_config()
        state = platform.object_store.folder / "state.json"
        # Its keys are never printed: GET /system/config shows them to the admin.
        console.print(
            f"  storage    minio.default = SeaweedFS S3 at {s3['endpoint']} "
            f"(region {s3['region']}; access and secret keys kept in {escape(str(state))})"
        )
        console.print(f"             local.default = {escape(str(storage))}")
    else:
        console.print(f"  storage    minio.default = local.default = {escape(str(storage))}")
    for name, runtime in sorted(platform.runtimes.items()):
        console.print(f"  runtime    {name}: {runtime.describe()}")
    if "container" not in platform.runtimes:
        console.print(
            "  runtime    container: none (no container engine found; services that name an "
            "image fail unless they set runtime: process)"
        )
    console.print(f"  workers    {settings.workers}")
    console.print(f"  dashboard  {url}/ui")
    console.print(f"  API docs   {url}/docs")
    console.print("Ctrl-C stops it.")
