"""`ondrop up` in a subprocess, used only through the CLI and HTTP, as a user does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ondrop.client import Client, connection
from ondrop.settings import Settings


class Platform:
    """One `ondrop up` on a data folder; start, crash and restart it."""

    def __init__(self, data: Path) -> None:
        self.data = data
        # No test reaches a registry: an image is built or imported here, or refused.
        self.env = {**os.environ, "ONDROP_DATA": str(data), "ONDROP_PULL": "never"}
        for key in ("ONDROP_URL", "ONDROP_ADMIN_USER", "ONDROP_ADMIN_PASSWORD", "ONDROP_PORT"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, *flags: str, timeout: float = 30.0, degraded: bool = False) -> None:
        """Start it and wait until /health says Ok (or anything, with `degraded`)."""
        endpoint = self.data / "endpoint.json"
        endpoint.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ondrop", "up", "--port", "0", "--concurrency", "2", *flags],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output, _ = self.proc.communicate()
                raise AssertionError(f"ondrop up exited: {output}")
            if endpoint.exists():
                try:
                    url = json.loads(endpoint.read_text())["url"]
                except ValueError:  # an older ondrop writing it right now
                    time.sleep(0.05)
                    continue
                try:
                    answer = httpx.get(f"{url}/health", timeout=1)
                    if answer.text == "Ok" or (degraded and answer.status_code == 503):
                        self.url = str(url)
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"ondrop up did not come up in {timeout:g} s")

    def stop(self, sig: int = signal.SIGINT) -> str:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # and its pipe closed, whatever the test says next
            out, _ = self.proc.communicate()
            raise AssertionError(f"ondrop up did not stop in 90 s:\n{out[-4000:]}") from None
        return out

    def stop_now(self, pause: float = 0.3) -> None:
        """Ctrl-C twice, `pause` seconds apart (the second stops running jobs at once);
        nothing when it has exited already."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        time.sleep(pause)
        self.stop(signal.SIGINT)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ondrop", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ondrop {' '.join(args)} failed:\n{result.stderr}")
        return result

    def client(self) -> Client:
        """The admin's client of this platform, as the CLI finds it in the data folder."""
        url, user, password = connection(Settings.load(overrides={"data": self.data}, environ={}))
        return Client(url, user, password)


@contextmanager
def running(data: Path) -> Iterator[Platform]:
    """An `ondrop up` on `data`, started, and stopped after unless it was already."""
    platform = Platform(data)
    platform.start()
    try:
        yield platform
    finally:
        if platform.proc and platform.proc.poll() is None:
            platform.stop()


class RayPlatform(Platform):
    """`ondrop up` with its pools on the Ray cluster at `address` (`backends`: the flags
    that say which pools; both by default), staging through the bundled SeaweedFS, which
    the nodes reach; its Ray driver gets the test clusters' environment, and `env`."""

    def __init__(self, data: Path, address: str, *backends: str, **env: str) -> None:
        from tests.support.ray_cluster import ray_env

        super().__init__(data)
        self.env.update(ray_env(env))
        self.flags = [*(backends or ("--backend", "ray")), "--ray-address", address]
        self.flags += ["--object-store", "seaweedfs"]

    def start(self, *flags: str, timeout: float = 180.0, degraded: bool = False) -> None:
        """As Platform.start; joining a cluster takes a while on a loaded machine."""
        super().start(*self.flags, *flags, timeout=timeout, degraded=degraded)
