"""The replicas of exposed services as containers: started detached, each in a network
namespace of its own, with a writable root of its own (an overlay on the shared image)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path

from ondrop.runtime.base import Served
from ondrop.runtime.cgroups import JobCgroup
from ondrop.runtime.engine import Engine
from ondrop.runtime.images import Images
from ondrop.runtime.oci import OciRuntime

TAIL_BYTES = 1024 * 1024  # of a replica's log read for its last lines


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the log, from at most its last TAIL_BYTES."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            if size > TAIL_BYTES:
                f.readline()  # a line cut in two
            return b"".join(deque(f, maxlen=lines)).decode("utf-8", "replace")
    except OSError:
        return ""


class ServedBundle(Served):
    """A replica the OCI runtime started from a bundle in `folder` (the fast path)."""

    def __init__(
        self,
        name: str,
        pid: int,
        oci: OciRuntime,
        images: Images,
        cgroup: JobCgroup,
        folder: Path,
    ) -> None:
        self.name, self.pid = name, pid
        self.oci, self.images, self.cgroup, self.folder = oci, images, cgroup, folder

    def log(self, lines: int) -> str:
        return _tail(self.folder / "bundle" / "log", lines)

    def stop(self, grace: float) -> None:
        self.oci.kill(self.name, "TERM")
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.oci.delete(self.name)  # --force: SIGKILL what is left
        self.cgroup.remove()
        self.images.drop_root(self.name)
        shutil.rmtree(self.folder, ignore_errors=True)


class ServedEngine(Served):
    """A replica `podman run --detach` (or docker) started."""

    def __init__(self, name: str, pid: int, engine: Engine, folder: Path) -> None:
        self.name, self.pid, self.engine, self.folder = name, pid, engine, folder

    def log(self, lines: int) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            shown = subprocess.run(
                [self.engine.binary, "logs", "--tail", str(lines), self.name],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return shown.stdout + shown.stderr
        return ""

    def stop(self, grace: float) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [self.engine.binary, "stop", "--time", str(max(1, round(grace))), self.name],
                capture_output=True,
                timeout=grace + 30,
            )
        self.engine.remove([self.name])
        shutil.rmtree(self.folder, ignore_errors=True)
