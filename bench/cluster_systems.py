"""The systems bench/cluster.py compares on one loopback Ray cluster: `ondrop up --backend
ray` (its services on the bundled SeaweedFS, files uploaded through the API) and the plain
Ray tasks of bench/raw_ray.py, a driver of its own; every process started is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from harness import BENCH, BIN, WORKERS
from raw_ray import REPLY

from ondrop.client import Client

sys.path.insert(0, str(BENCH.parent))  # tests.support: the loopback cluster of the tests
from tests.support.ray_cluster import ray_env

STORE = "minio.default"  # the bundled object store, which every node reaches


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OnCluster:
    """`ondrop up --backend ray` on a fresh data folder, its output in ondrop.log there."""

    def __init__(self, folder: Path, address: str, timeout: float = 180.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.data = data = folder / "data"
        env = ray_env({"ONDROP_DATA": str(data), "ONDROP_LOG_LEVEL": "warning"})
        for key in ("ONDROP_URL", "ONDROP_ADMIN_USER", "ONDROP_ADMIN_PASSWORD", "ONDROP_PORT"):
            env.pop(key, None)
        self.log: IO[str] = (folder / "ondrop.log").open("w")
        flags = ["--backend", "ray", "--ray-address", address, "--object-store", "seaweedfs"]
        self.proc = subprocess.Popen(
            [str(BIN / "ondrop"), "up", "--port", "0", "--container-engine", "none", *flags],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its object store too, for the clean-up
        )
        deadline = time.monotonic() + timeout
        while not self._up(data):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"ondrop up did not come up; see {folder / 'ondrop.log'}")
            time.sleep(0.2)

    def _up(self, data: Path) -> bool:
        if not hasattr(self, "client"):
            try:
                url = json.loads((data / "endpoint.json").read_text())["url"]
                password = json.loads((data / "admin.json").read_text())["password"]
            except (OSError, ValueError, KeyError):
                return False  # not written yet
            self.client = Client(url, "admin", password)
        return self.client.health()  # Ok once it has joined the cluster

    def __enter__(self) -> OnCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        group = _group(self.proc.pid)  # it and its object store, before they exit
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        for pid in group:  # whatever it left behind, and only that
            if _group(self.proc.pid, [pid]):  # still of the group, not a new process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._stop_object_store()
        self.log.close()

    def _stop_object_store(self) -> None:
        """The bundled SeaweedFS runs in a session of its own; ondrop stops it as it exits,
        but not when it was killed: then it is the one state.json names, in our folder."""
        state = self.data / "seaweedfs" / "state.json"
        try:
            pid = int(json.loads(state.read_text())["pid"])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return  # none was started, or it is gone
        if str(self.data).encode() in command:  # not a process that took its pid since
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _group(leader: int, among: list[int] | None = None) -> list[int]:
    """The live processes of the process group `leader` leads (of `among`, when given)."""
    found = []
    pids = (
        among
        if among is not None
        else [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    )
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader and fields[0] not in ("Z", "X"):
            found.append(pid)
    return found


class RawRay:
    """bench/raw_ray.py, a driver of its own on the cluster: one JSON request at a time,
    each answered within `timeout` seconds or the driver is killed."""

    def __init__(self, address: str, timeout: float = 300.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "raw_ray.py"), address],
            env=ray_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.timeout = timeout
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True, name="bench-raw-ray").start()
        try:
            self._read()  # ready: connected, its workers warm
        except BaseException:
            self.close()
            raise

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # it exited

    def _read(self) -> dict[str, Any]:
        """Its next answer: a line starting REPLY (Ray prints lines of its own)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                self.proc.kill()  # a wrong address, a lost node: Ray waits for ever
                raise RuntimeError(
                    f"the raw Ray driver gave no answer in {self.timeout:g} s"
                ) from None
            if not line:
                raise RuntimeError(f"the raw Ray driver exited with {self.proc.wait(30)}")
            if line.startswith(REPLY):
                return dict(json.loads(line.removeprefix(REPLY)))
            print(f"  raw Ray driver: {line.rstrip()}", file=sys.stderr)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def __enter__(self) -> RawRay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # it ends when its input does
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def service(name: str, mode: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": mode,
        "script": script,
        "input": [{"storage_provider": STORE, "path": f"bench/{name}-in"}],
        "output": [{"storage_provider": STORE, "path": f"bench/{name}-out"}],
        **extra,
    }


def upload(client: Client, name: str, files: list[Path], at_once: int = WORKERS) -> None:
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda p: client.upload(STORE, f"bench/{name}-in/{p.name}", p), files))


def wait_done(client: Client, name: str, count: int, timeout: float = 600.0) -> int:
    """Returns once `count` jobs of `name` succeeded, with the most that ondrop said were
    running at once meanwhile; raises when one failed."""
    deadline = time.monotonic() + timeout
    most = 0
    while True:
        jobs = client.status(name)["jobs"]
        most = max(most, int(jobs.get("running", 0)))
        if jobs.get("failed") or jobs.get("cancelled"):
            failed = next(iter(client.jobs(name, "failed") or client.jobs(name)))
            raise RuntimeError(f"{name}: {jobs}; {client.job(name, failed)}")
        if jobs.get("succeeded", 0) >= count:
            return most
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {jobs} after {timeout:g} s, {count} wanted")
        time.sleep(0.1)


def through_ondrop(
    client: Client, name: str, files: list[Path], at_once: int = WORKERS, together: bool = False
) -> tuple[float, float, int]:
    """Seconds from the first upload (`at_once` at a time, or `together` in one request,
    as `ondrop put` sends many small files) to the last of them returned, and to the last
    of their jobs finished; the most that ondrop said were running at once."""
    started = time.perf_counter()
    if together:
        client.upload_many(STORE, f"bench/{name}-in", files)
    else:
        upload(client, name, files, at_once)
    uploaded = time.perf_counter() - started
    most = wait_done(client, name, len(files))
    return uploaded, time.perf_counter() - started, most


def make_files(folder: Path, count: int, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}{i:05}.txt" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_text(f"file {i}\n")
    return paths
