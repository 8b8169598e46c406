"""Images as the fast path needs them: each unpacked once into a root filesystem that all
its jobs share read-only, found by image id, refreshed when a tag moves.

Unpacking also makes every mount point a job's container needs, so that no OCI runtime
makes one in the shared root at start: runtimes starting at once would collide ("cannot
mkdir `sys`: File exists"), and the image is not theirs to write."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from ondrop.errors import ExecutionError
from ondrop.runtime.engine import Engine, Image

RECHECK = 10.0  # seconds a tag's image id is trusted before the engine is asked again
LAYOUT = "3"  # what `ready` holds: bumped when unpacking changes, to unpack again


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class Images:
    def __init__(self, engine: Engine, folder: Path, pull: bool, prefix: str = "ondrop-") -> None:
        self.prefix = prefix  # names the containers made to export images
        self.engine = engine
        self.folder = folder
        self.pull = pull
        self._known: dict[str, tuple[Image, float]] = {}  # ref -> (image, when checked)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def image(self, ref: str) -> Image:
        """The image `ref` names now (pulled if allowed); NotFoundError says what to do."""
        with self._lock:
            known = self._known.get(ref)
        if known is not None and time.monotonic() - known[1] < RECHECK:
            return known[0]
        image = self.engine.ensure(ref, self.pull)
        with self._lock:
            self._known[ref] = (image, time.monotonic())
        return image

    def rootfs(self, image: Image, mount_points: Mapping[str, bool] | None = None) -> Path:
        """The image's root filesystem, unpacked on first use with `mount_points` made in
        it (path inside -> whether a file, else a folder)."""
        home = self.folder / image.id
        ready = home / "ready"
        if _read(ready) == LAYOUT:
            return home / "rootfs"
        with self._lock:
            lock = self._locks.setdefault(image.id, threading.Lock())
        with lock:
            if _read(ready) != LAYOUT:
                self._unpack(image, home, mount_points or {})
                ready.write_text(LAYOUT)
        return home / "rootfs"

    def _unpack(self, image: Image, home: Path, mount_points: Mapping[str, bool]) -> None:
        shutil.rmtree(home, ignore_errors=True)
        (home / "rootfs").mkdir(parents=True)
        tarball = home / "rootfs.tar"
        try:
            self.engine.export_rootfs(image, tarball, self.prefix)
            result = subprocess.run(
                ["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(home / "rootfs")],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if result.returncode != 0:
                raise ExecutionError(f"cannot unpack image {image.ref}: {result.stderr.strip()}")
            for path, is_file in mount_points.items():
                _make(home / "rootfs", path, is_file)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        finally:
            tarball.unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> None:
        """Remove unpacked images whose id is not in `keep`."""
        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _make(rootfs: Path, path: str, is_file: bool) -> None:
    """Make the mount point `path` in `rootfs` where it is missing (an empty file, or a
    folder), never through a link: the image's links could lead out of it. A path through
    a link is left to the OCI runtime, which resolves links inside the root."""
    parts = [part for part in path.split("/") if part]
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            if is_file and i == len(parts) - 1:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with contextlib.suppress(FileExistsError):  # a link there is kept too
                    os.close(os.open(part, flags, 0o644, dir_fd=fd))
                return
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:  # a link, or not a folder
                return
            os.close(fd)
            fd = below
    finally:
        os.close(fd)
