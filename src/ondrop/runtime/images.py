"""Images as the fast path needs them: each unpacked once into a root filesystem that all
its jobs share read-only, found by image id, refreshed when a tag moves.

Unpacking also makes every mount point a job's container needs, so that no OCI runtime
makes one in the shared root at start: runtimes starting at once would collide ("cannot
mkdir `sys`: File exists"), and the image is not theirs to write.

For containers in a user namespace (an IdMap), the unpacked files are owned by the
namespace's host ids (the image's root by its root, a file of uid 1000 by its 1000), with
no setuid or setgid bit (inert under no_new_privs, and a way to the range's ids from the
host); and the OCI runtime, which sets the root up as the container's root, reaches them
through a passage that this uid may enter: the data folder and its parents need not be
open to anyone (see Passage)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

from ondrop.errors import ExecutionError
from ondrop.runtime.engine import Engine, Image
from ondrop.runtime.oci import IdMap

log = logging.getLogger(__name__)

RECHECK = 10.0  # seconds a tag's image id is trusted before the engine is asked again
PULL_AGAIN = 300.0  # seconds between pulls of one image under the pull policy `always`
LAYOUT = "3"  # what `ready` holds: bumped when unpacking changes, to unpack again


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class Images:
    def __init__(
        self,
        engine: Engine,
        folder: Path,
        pull: str,
        prefix: str = "ondrop-",
        idmap: IdMap | None = None,
    ) -> None:
        self.prefix = prefix  # names the containers made to export images
        self.engine = engine
        self.folder = folder
        self.pull = pull  # the pull policy: always, missing or never
        self.idmap = idmap  # whose files the unpacked images are: a user namespace's
        self._known: dict[str, tuple[Image, float]] = {}  # ref -> (image, when checked)
        self._pulled: dict[str, float] = {}  # ref -> when last pulled (policy always)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._passage: Passage | None = None

    def image(self, ref: str) -> Image:
        """The image `ref` names now, as the pull policy has it (checked again after
        RECHECK seconds); NotFoundError says what to do."""
        with self._lock:
            known = self._known.get(ref)
        if known is not None and time.monotonic() - known[1] < RECHECK:
            return known[0]
        policy = self.pull
        with self._lock:
            if (
                policy == "always"
                and time.monotonic() - self._pulled.get(ref, -PULL_AGAIN) < PULL_AGAIN
            ):
                policy = "missing"  # pulled a moment ago
        image = self.engine.ensure(ref, policy)
        with self._lock:
            self._known[ref] = (image, time.monotonic())
            if policy == "always":
                self._pulled[ref] = time.monotonic()
        return image

    def rootfs(self, image: Image, mount_points: Mapping[str, bool] | None = None) -> Path:
        """The image's root filesystem, unpacked on first use with `mount_points` made in
        it (path inside -> whether a file, else a folder); with an IdMap, the path the OCI
        runtime reaches it by."""
        home = self.folder / image.id
        ready = home / "ready"
        layout = LAYOUT if self.idmap is None else f"{LAYOUT} {self.idmap}"
        if _read(ready) != layout:
            with self._lock:
                lock = self._locks.setdefault(image.id, threading.Lock())
            with lock:
                if _read(ready) != layout:
                    self._unpack(image, home, mount_points or {})
                    ready.write_text(layout)
        return self.reachable(home / "rootfs")

    def reachable(self, path: Path) -> Path:
        """Where an OCI runtime starting a container in the user namespace finds `path`,
        a path in this folder: `path` itself when the namespace's root can enter it."""
        if self.idmap is None:
            return path
        with self._lock:
            if self._passage is None:
                self._passage = Passage(self.folder, self.idmap.host)
            passage = self._passage
        return passage.path / path.relative_to(self.folder)

    def writable_root(self, image: Image, name: str, mount_points: Mapping[str, bool]) -> Path:
        """A root of the image that the container `name` may write (an exposed service's
        server writes its configuration and caches): an overlay on the unpacked image,
        what is written kept in `served/<name>` until drop_root(name). The image itself is
        never written. Needs an IdMap (the fast path): the path the OCI runtime takes."""
        assert self.idmap is not None
        self.rootfs(image, mount_points)  # unpacked, if it is not yet
        lower = self.folder / image.id / "rootfs"  # the real folder, not its passage
        own = self.folder / SERVED / name
        self.drop_root(name)
        for part in ("upper", "work", "root"):
            (own / part).mkdir(parents=True)
        (self.folder / SERVED).chmod(0o711)
        own.chmod(0o711)
        info = os.stat(lower)  # the merged root is the upper folder: as the image's is
        os.chown(own / "upper", info.st_uid, info.st_gid)
        (own / "upper").chmod(stat.S_IMODE(info.st_mode))
        target = self.reachable(own / "root")
        options = f"lowerdir={lower},upperdir={own / 'upper'},workdir={own / 'work'}"
        if _libc().mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()) != 0:
            errno = ctypes.get_errno()
            shutil.rmtree(own, ignore_errors=True)
            raise OSError(errno, f"cannot mount a writable root for {name}: {os.strerror(errno)}")
        return target

    def drop_root(self, name: str) -> None:
        """Unmount and remove container `name`'s writable root, if it has one."""
        own = self.folder / SERVED / name
        for target in {self.reachable(own / "root"), own / "root"}:
            _umount(target)
        if not _mounted(own / "root"):  # never into a root still mounted: it is the image's
            shutil.rmtree(own, ignore_errors=True)

    def drop_roots(self, prefix: str = "") -> None:
        """drop_root() for every container whose name starts with `prefix` (start-up)."""
        with contextlib.suppress(FileNotFoundError):
            for own in (self.folder / SERVED).iterdir():
                if own.name.startswith(prefix):
                    self.drop_root(own.name)

    def close(self) -> None:
        with self._lock:
            passage, self._passage = self._passage, None
        if passage is not None:
            passage.close()

    def _unpack(self, image: Image, home: Path, mount_points: Mapping[str, bool]) -> None:
        shutil.rmtree(home, ignore_errors=True)
        (home / "rootfs").mkdir(parents=True)
        home.chmod(0o711)  # on the OCI runtime's way in, whatever the umask
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
            if self.idmap is not None:
                _own(home / "rootfs", self.idmap)
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
            if entry.name not in keep and entry.name != SERVED:
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


def _own(rootfs: Path, idmap: IdMap) -> None:
    """Give every file of `rootfs` to the host ids its owner has in `idmap`, and take their
    setuid and setgid bits off (a program of root's would be one of the range's root)."""
    seen: set[tuple[int, int]] = set()  # files hard-linked: moved once

    def move(path: str) -> None:
        info = os.lstat(path)
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                return
            seen.add((info.st_dev, info.st_ino))
        uid, gid = idmap.to_host(info.st_uid), idmap.to_host(info.st_gid)
        os.chown(path, uid, gid, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))

    move(str(rootfs))
    for top, folders, files in os.walk(rootfs):  # links to folders are listed, not followed
        for name in [*folders, *files]:
            move(os.path.join(top, name))


PASSAGES = Path("/run/ondrop")  # where the passages to unpacked images are
MS_BIND, MNT_DETACH = 4096, 2
SERVED = "served"  # writable roots of exposed services' containers, by container


class Passage:
    """A path to a folder of unpacked images that the root of a container's user namespace
    (host uid and gid `gid`) may follow, for the OCI runtime to set a container's root up
    from inside the namespace, without opening the data folder (0700, maybe below /root)
    to anyone: `/run/ondrop/<hash of the folder>/` (the host's root and that gid alone may
    enter it) holds a bind mount of the folder, made once and unmounted by close(). Where
    the folder can be entered already, it is its own passage."""

    def __init__(self, folder: Path, gid: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o711)
        if _enterable(folder, gid):
            self.path = folder
            self._finalizer = None
            return
        _sweep()
        room = PASSAGES / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        for where, group, mode in [(PASSAGES, 0, 0o711), (room, gid, 0o710)]:
            with contextlib.suppress(FileExistsError):
                where.mkdir(mode=mode)
            info = os.lstat(where)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
                raise OSError(f"{where} is not a folder of root's")
            os.chown(where, 0, group)
            where.chmod(mode)
        self.path = room / "images"
        with contextlib.suppress(FileExistsError):
            self.path.mkdir()
        if not _same(self.path, folder):  # not there yet, or one of another folder's
            _umount(self.path)
            _bind(folder, self.path)
        self._finalizer = weakref.finalize(self, _remove, self.path)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def _enterable(folder: Path, who: int) -> bool:
    """Whether a process of host uid and gid `who` (and no other group) may enter `folder`."""
    path = folder.resolve()
    for part in [path, *path.parents]:
        info = os.stat(part)
        if info.st_uid == who:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == who:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _same(a: Path, b: Path) -> bool:
    try:
        one, other = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _bind(source: Path, target: Path) -> None:
    if _libc().mount(str(source).encode(), str(target).encode(), None, MS_BIND, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot bind {source} on {target}: {os.strerror(errno)}")


def _remove(passage: Path) -> None:
    _umount(passage)
    for folder in (passage, passage.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _sweep() -> None:
    """Remove the passages of folders deleted since: what platforms that died left, whose
    data folder is gone (a temporary one), so that none restarts to remove them."""
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[3].endswith("//deleted"):
            point = Path(fields[4])
            if point.parent.parent == PASSAGES and point.name == "images":
                _remove(point)


def _mounted(target: Path) -> bool:
    """Whether something is mounted on `target` (a bind mount of the same file system too,
    which os.path.ismount misses)."""
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    escaped = str(target).translate({ord(c): f"\\{ord(c):03o}" for c in " \t\n\\"})
    return any(line.split(" ")[4] == escaped for line in table.splitlines() if line)


def _umount(target: Path) -> None:
    """Unmount `target`, if something is mounted there (what a dead platform left)."""
    while _mounted(target):
        if _libc().umount2(str(target).encode(), MNT_DETACH) != 0:
            log.warning("cannot unmount %s: %s", target, os.strerror(ctypes.get_errno()))
            return
