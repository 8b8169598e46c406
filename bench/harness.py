"""Running the systems the benchmarks compare, on this machine: the floor (a thread pool),
Celery and Huey on a Redis started here, and ondrop itself; every server started is
stopped again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))

sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

from work import SCRIPT, process  # noqa: E402

from ondrop.client import Client  # noqa: E402


def make_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"f{i:05}.txt"
        path.write_text(f"file {i}\n")
        paths.append(path)
    return paths


def wait_count(folder: Path, count: int, timeout: float = 600.0) -> float:
    """Seconds until `folder` holds `count` files."""
    started = time.perf_counter()
    while sum(1 for _ in folder.iterdir()) < count:
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{folder} has {sum(1 for _ in folder.iterdir())} of {count}")
        time.sleep(0.01)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the floor ------------------------------------------------------------------------------
def floor(files: list[Path], out: Path) -> float:
    """Jobs per second of a plain thread pool doing the per-file work, no durability."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda p: process(str(p), str(out)), files))
    return len(files) / (time.perf_counter() - started)


# -- Redis, Celery, Huey --------------------------------------------------------------------
@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make bench installs it)")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _env(redis: str) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_REDIS_URL": redis,
        "PYTHONPATH": os.pathsep.join([str(BENCH), str(BENCH.parent / "src")]),
    }


@contextlib.contextmanager
def _worker(command: list[str], redis: str) -> Iterator[None]:
    proc = subprocess.Popen(
        command,
        cwd=BENCH,
        env=_env(redis),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def queue_run(kind: str, redis: str, files: list[Path], out: Path) -> float:
    """Jobs per second of Celery or Huey with WORKERS worker processes."""
    os.environ["BENCH_REDIS_URL"] = redis
    if kind == "celery":
        import celery_app

        submit: Callable[[str, str], Any] = celery_app.process.delay
        command = [
            str(BIN / "celery"),
            "-A",
            "celery_app",
            "worker",
            "-c",
            str(WORKERS),
            "-P",
            "prefork",
            "--loglevel=warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    else:
        import importlib

        import huey_app

        importlib.reload(huey_app)  # the URL of this run's Redis
        submit = huey_app.process
        command = [
            str(BIN / "huey_consumer"),
            "huey_app.huey",
            "-w",
            str(WORKERS),
            "-k",
            "process",
            "-q",
        ]
    warm = out.parent / f"{out.name}-warm"
    warm.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with _worker(command, redis):
        submit(str(files[0]), str(warm))  # workers up and warm before the clock starts
        wait_count(warm, 1, timeout=120)
        started = time.perf_counter()
        for path in files:
            submit(str(path), str(out))
        wait_count(out, len(files))
        return len(files) / (time.perf_counter() - started)


# -- ondrop ---------------------------------------------------------------------------------
class Ondrop:
    """`ondrop up` in a subprocess on a fresh data folder, with the copy service applied."""

    def __init__(self, folder: Path, *flags: str) -> None:
        self.data = folder / "data"
        env = {**os.environ, "ONDROP_DATA": str(self.data), "ONDROP_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            [
                str(BIN / "ondrop"),
                "up",
                "--port",
                "0",
                "--concurrency",
                str(WORKERS),
                "--container-engine",
                "none",
                *flags,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        endpoint = self.data / "endpoint.json"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("ondrop up exited")
            with contextlib.suppress(OSError, ValueError):
                url = json.loads(endpoint.read_text())["url"]
                password = json.loads((self.data / "admin.json").read_text())["password"]
                break
            if time.monotonic() > deadline:
                raise RuntimeError("ondrop up did not start")
            time.sleep(0.05)
        self.client = Client(url, "admin", password)
        while not self.client.health():
            time.sleep(0.05)

    def apply(self, name: str, script: str, **extra: Any) -> tuple[Path, Path]:
        """Apply a service reading <name>/in and writing <name>/out; returns both folders."""
        self.client.apply(
            [
                {
                    "name": name,
                    "script": script,
                    "input": [{"path": f"{name}/in"}],
                    "output": [{"path": f"{name}/out"}],
                    **extra,
                }
            ]
        )
        inbox = self.data / "storage" / name / "in"
        outbox = self.data / "storage" / name / "out"
        inbox.mkdir(parents=True, exist_ok=True)
        outbox.mkdir(parents=True, exist_ok=True)
        return inbox, outbox

    def ended(self, service: str, timeout: float = 600.0) -> dict[str, dict[str, Any]]:
        """The service's jobs once none is queued or running (an output is stored before
        its job's end is recorded: counting outputs is not waiting for the ends)."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.client.status(service)["jobs"]
            if not counts.get("queued") and not counts.get("running"):
                return self.client.jobs(service)
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs of {service} still pending after {timeout:g} s")
            time.sleep(0.05)

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident memory of the platform, in bytes."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) * 1024
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ondrop_drop(files: list[Path], scratch: Path) -> float:
    """Jobs per second when the files are copied into the input folder of a service."""
    platform = Ondrop(scratch)
    try:
        inbox, outbox = platform.apply("copy", SCRIPT.read_text())
        started = time.perf_counter()
        for path in files:
            shutil.copyfile(path, inbox / path.name)
        wait_count(outbox, len(files))
        return len(files) / (time.perf_counter() - started)
    finally:
        platform.close()


def ondrop_upload(files: list[Path], scratch: Path) -> float:
    """Jobs per second when the files are uploaded through the API as `ondrop put` sends
    them (small files in tar batches, several requests at once)."""
    platform = Ondrop(scratch)
    try:
        _, outbox = platform.apply("copy", SCRIPT.read_text())
        env = {**os.environ, "ONDROP_DATA": str(platform.data)}
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "ondrop"), "put", "copy", *map(str, files)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_count(outbox, len(files))
        return len(files) / (time.perf_counter() - started)
    finally:
        platform.close()
