"""Images as the fast path needs them: each unpacked once into a root filesystem that all
its jobs share read-only, found by image id, refreshed when a tag moves."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from ondrop.errors import ExecutionError
from ondrop.runtime.engine import Engine, Image

RECHECK = 10.0  # seconds a tag's image id is trusted before the engine is asked again
LAYOUT = "2"  # what `ready` holds: bumped when unpacking changes, to unpack again


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

    def rootfs(self, image: Image) -> Path:
        """The image's root filesystem, unpacked on first use."""
        home = self.folder / image.id
        ready = home / "ready"
        if _read(ready) == LAYOUT:
            return home / "rootfs"
        with self._lock:
            lock = self._locks.setdefault(image.id, threading.Lock())
        with lock:
            if _read(ready) != LAYOUT:
                self._unpack(image, home)
                ready.write_text(LAYOUT)
        return home / "rootfs"

    def _unpack(self, image: Image, home: Path) -> None:
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
            # Mount points a job may need, which a read-only root cannot grow later.
            etc = home / "rootfs" / "etc"
            if not etc.is_symlink():
                etc.mkdir(exist_ok=True)
                for name in ("hosts", "resolv.conf"):
                    target = etc / name
                    if not target.exists() and not target.is_symlink():
                        target.touch()
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
