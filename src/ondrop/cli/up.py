"""`ondrop up`: the platform in the foreground until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from rich.console import Console

from ondrop import __version__
from ondrop.api.app import create_app
from ondrop.api.auth import admin_credentials
from ondrop.client import ENDPOINT_FILE
from ondrop.errors import OndropError
from ondrop.platform import Platform
from ondrop.settings import Settings

console = Console(stderr=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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

    platform = Platform(settings)
    platform.start()
    endpoint = Path(settings.data) / ENDPOINT_FILE
    endpoint.write_text(json.dumps({"url": url, "pid": _pid()}))
    _banner(settings, platform, url, admin.user, admin.password)

    app = create_app(platform, admin, manage=False)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    previous: Any = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        console.print(
            f"[bold]stopping[/]: running jobs get up to {settings.grace:g} s to finish "
            "(Ctrl-C again stops them now; they run again on the next start)"
        )
        endpoint.unlink(missing_ok=True)
        platform.stop()
        signal.signal(signal.SIGTERM, previous)
        console.print("stopped; nothing accepted was lost")


def _pid() -> int:
    import os

    return os.getpid()


def _banner(settings: Settings, platform: Platform, url: str, user: str, password: str) -> None:
    storage = Path(settings.data) / "storage"
    console.print(f"[bold green]ondrop {__version__}[/] is up at [bold]{url}[/]")
    console.print(f"  admin      {user} / {password}")
    console.print(f"  data       {settings.data}")
    console.print(f"  storage    minio.default = local.default = {storage}")
    console.print(
        f"  runtimes   {', '.join(sorted(platform.runtimes))} "
        "(no container engine: services naming an image fail unless runtime: process)"
    )
    console.print(f"  workers    {settings.workers}")
    console.print(f"  API docs   {url}/docs")
    console.print("Ctrl-C stops it.")
