"""`local.<id>`: a folder on this machine; also the embedded default store.

Whoever can write into the folder may put links in it, and swap them while jobs read.
So every read, stat and write reaches its key from a descriptor of the root through no
link anywhere along it (beneath.py), and what is checked is the descriptor opened,
never the path again.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ondrop.errors import InvalidKeyError, NotFoundError, StorageError
from ondrop.storage.base import TEMP_PREFIX, ObjectInfo, StorageProvider, check_key, join_key
from ondrop.storage.beneath import FOLDER, Beneath, copy

log = logging.getLogger(__name__)

LINK = "a link, not a file: links are never followed"
LINKED_FOLDER = "a link, not a folder: links are never followed"
# (LocalStorage.list hides the builtin in its class body)
Found = list[ObjectInfo]
Stack = list[tuple[int, str]]  # folders to scan: a descriptor, the key of the folder


@dataclass(frozen=True)
class Refused(ObjectInfo):
    """An entry of a folder that is no object and is never read (a link): the listings
    that start jobs offer it, so that it shows as refused, with why."""

    reason: str = LINK


class LocalStorage(StorageProvider):
    kind = "local"

    def __init__(self, name: str, root: Path, fsync: bool = True, mode: int = 0o644) -> None:
        super().__init__(name)
        self.root = root.resolve()
        self.fsync = fsync
        # Every object is a file of the platform's with this mode, whatever the umask and
        # whatever mode its source had: no setuid, setgid or sticky bit is ever stored.
        self.mode = mode & 0o777
        # Uploads are written here, then renamed into place: readers never see half a file,
        # and what a crash leaves behind is in one place.
        self.tmp = self.root / f"{TEMP_PREFIX}tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            top = os.open(self.root, FOLDER | os.O_NOFOLLOW)
        except OSError as exc:
            raise StorageError(f"{name}: cannot create its folder {self.root}: {exc}") from exc
        # Held for the provider's life: a descriptor closed under another thread's feet
        # could be reused by anything.
        weakref.finalize(self, os.close, top)
        self._at = Beneath(top)
        self.resolver = self._at.resolver  # "openat2", or "walk" on kernels without it
        try:
            self._clean_tmp()
        except OSError as exc:
            raise StorageError(f"{name}: cannot use its folder {self.tmp}: {exc}") from exc

    def _clean_tmp(self) -> None:
        """Remove half-written uploads of processes that are gone."""
        fd = self._at.folder(self.tmp.name, os.O_RDONLY, create=True)
        try:
            with os.scandir(fd) as entries:
                names = [entry.name for entry in entries]
            for name in names:
                pid = name.partition("-")[0]
                if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    # -- resolving, never through a link ------------------------------------------------
    def _link_along(self, key: str) -> StorageError | None:
        """The refusal of `key` when a part of it is a link (after an open failed)."""
        link = self._at.link_along(key)
        if link is None:
            return None
        if link == key:
            return StorageError(f"{self.name}: {key!r} is {LINK}")
        return StorageError(f"{self.name}: {key!r} goes through {link!r}, {LINKED_FOLDER}")

    def _failed(self, key: str, exc: OSError, doing: str) -> Exception:
        """What an OSError of reaching `key` means: a link (refused), nothing, or a fault."""
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
            link = self._link_along(key)
            if link is not None:
                return link
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) and doing == "read":
            return NotFoundError(f"{self.name}: no object {key!r}")
        return StorageError(f"{self.name}: cannot {doing} {key!r}: {exc.strerror}")

    def _read(self, key: str) -> tuple[int, os.stat_result]:
        """A descriptor of the object `key` open for reading, and its fstat."""
        check_key(key)
        try:
            fd = self._at.open(key, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block us
        except OSError as exc:
            raise self._failed(key, exc, "read") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise NotFoundError(f"{self.name}: no object {key!r}")
            raise StorageError(f"{self.name}: {key!r} is not a file")
        return fd, st

    # -- keys and listings --------------------------------------------------------------
    def key_of(self, path: Path) -> str | None:
        """The key of a file under the root, or None for files that are not objects: temp
        files, and names no key can have (not UTF-8, control characters)."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        if any(part.startswith(TEMP_PREFIX) for part in relative.parts):
            return None
        try:
            return check_key(relative.as_posix())
        except InvalidKeyError as exc:
            log.warning("%s: ignoring %s: %s", self.name, os.fsencode(path), exc)
            return None

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", st.st_mtime)

    def _refused(self, key: str, name: str, folder: int) -> Refused | None:
        """The link `name` in the folder open as `folder`, as a refusal whose version is its
        target's: the same link seen twice is one refusal."""
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            target = os.fsencode(os.readlink(name, dir_fd=folder))
        except OSError:
            return None  # gone, or no longer a link: what replaced it has its own event
        if not stat.S_ISLNK(st.st_mode):
            return None
        version = f"link-{hashlib.sha256(target).hexdigest()[:16]}"
        return Refused(key, st.st_size, version, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from (info for info in self.scan(prefix) if not isinstance(info, Refused))

    def scan(self, prefix: str = "") -> Found:
        """list(), with the links found as Refused: what a listing that starts jobs offers.
        Folders are walked by descriptor, links neither followed nor descended."""
        if prefix:
            check_key(prefix)
        try:
            top = self._at.folder(prefix, os.O_RDONLY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                link = self._link_along(prefix)
                if link is None:
                    return []
                raise link from None
            raise StorageError(f"{self.name}: cannot list {prefix!r}: {exc.strerror}") from exc
        found: Found = []
        stack: Stack = [(top, prefix)]
        try:
            while stack:
                fd, folder = stack.pop()
                try:
                    self._scan_one(fd, folder, found, stack)
                finally:
                    os.close(fd)
        finally:
            for fd, _ in stack:
                os.close(fd)
        found.sort(key=lambda info: info.key)
        return found

    def _scan_one(self, fd: int, folder: str, found: Found, stack: Stack) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                key = join_key(folder, entry.name)
                try:
                    check_key(key)
                except InvalidKeyError as exc:
                    log.warning("%s: ignoring %s: %s", self.name, os.fsencode(key), exc)
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                        stack.append((os.open(entry.name, flags, dir_fd=fd), key))
                    elif entry.is_symlink():
                        refused = self._refused(key, entry.name, fd)
                        if refused is not None:
                            found.append(refused)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(self._info(key, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue  # gone meanwhile, or swapped for a link

    def stat(self, key: str) -> ObjectInfo | None:
        """The object at `key`; None for folders, missing files, links (wherever they are
        along the key) and anything else that is not a plain file."""
        check_key(key)
        try:
            fd = self._at.open(key, os.O_PATH)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                return None
            raise StorageError(f"{self.name}: cannot stat {key!r}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return self._info(key, st) if stat.S_ISREG(st.st_mode) else None

    def entry(self, key: str) -> ObjectInfo | None:
        """What landed at `key`, as the watcher offers it: the object, a Refused for a link,
        None for anything else."""
        info = self.stat(key)
        if info is not None:
            return info
        folder, _, name = key.rpartition("/")
        try:
            fd = self._at.folder(folder)
        except OSError:
            return None  # through a link: the watcher never looks into linked folders
        try:
            return self._refused(key, name, fd)
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        fd, _ = self._read(key)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def get(self, key: str, dest: Path) -> ObjectInfo:
        """Copy from the descriptor opened and checked: what a link swapped in meanwhile
        points to is never read."""
        fd, st = self._read(key)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(dest, flags, 0o666)
            try:
                copy(fd, out)
            finally:
                os.close(out)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot read {key!r}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return self._info(key, st)

    # -- writing --------------------------------------------------------------------------
    def _parent(self, key: str, create: bool) -> tuple[int, str]:
        """A descriptor of the folder `key` is in (made with `create`), and its last name."""
        check_key(key)
        folder, _, name = key.rpartition("/")
        try:
            return self._at.folder(folder, create=create), name
        except OSError as exc:
            raise self._failed(key, exc, "write") from None

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        parent, name = self._parent(key, create=True)
        try:
            tmp = self._at.folder(self.tmp.name, create=True)
            temp = f"{os.getpid()}-{uuid.uuid4().hex}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                with os.fdopen(os.open(temp, flags, self.mode, dir_fd=tmp), "wb") as out:
                    os.fchmod(out.fileno(), self.mode)
                    shutil.copyfileobj(source, out, 1 << 20)
                    out.flush()
                    if self.fsync:
                        os.fsync(out.fileno())
                    st = os.fstat(out.fileno())
                # Renamed from one descriptor into the other: over a link, the link goes.
                os.rename(temp, name, src_dir_fd=tmp, dst_dir_fd=parent)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=tmp)
                os.close(tmp)
        except IsADirectoryError:
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object") from None
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot write {key!r}: {exc.strerror}") from exc
        finally:
            os.close(parent)
        return self._info(key, st)

    def put_file(self, key: str, path: Path, move: bool = False) -> ObjectInfo:
        """With `move` (a file of the platform's own, such as an upload's body: never a
        job's) the file is renamed into place, given the store's mode."""
        if not move:
            return super().put_file(key, path)
        parent, name = self._parent(key, create=True)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, self.mode)
                if self.fsync:
                    os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.rename(path, name, dst_dir_fd=parent)  # the file is complete: moving it is atomic
        except IsADirectoryError:
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object") from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another file system: copy after all
                return super().put_file(key, path)
            raise StorageError(f"{self.name}: cannot write {key!r}: {exc.strerror}") from exc
        finally:
            os.close(parent)
        return self._info(key, st)

    def ensure_folder(self, path: str) -> None:
        if path:
            check_key(path)
        try:
            os.close(self._at.folder(path, create=True))
        except OSError as exc:
            raise self._failed(path, exc, "create folder") from None

    def folders(self) -> builtins.list[str]:
        top = self._at.folder("", os.O_RDONLY)
        try:
            with os.scandir(top) as entries:
                return sorted(
                    e.name
                    for e in entries
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith(TEMP_PREFIX)
                )
        finally:
            os.close(top)

    def remove_folder(self, path: str) -> int:
        """The objects, then the folder with what else is in it (links are removed, never
        followed)."""
        gone = super().remove_folder(path)
        folder, _, name = path.rpartition("/")
        try:
            parent = self._at.folder(folder)
        except FileNotFoundError:
            return gone
        except OSError as exc:
            raise self._failed(path, exc, "delete") from None
        try:
            _remove_tree(parent, name)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot delete {path!r}: {exc.strerror}") from exc
        finally:
            os.close(parent)
        return gone

    def delete(self, key: str) -> None:
        check_key(key)
        folder, _, name = key.rpartition("/")
        try:
            parent = self._at.folder(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._failed(key, exc, "delete") from None
        try:
            os.unlink(name, dir_fd=parent)  # a link itself goes, never what it points to
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object") from None
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot delete {key!r}: {exc.strerror}") from exc
        finally:
            os.close(parent)


def _remove_tree(parent: int, name: str) -> None:
    """Remove the folder `name` of the folder open at `parent` with all it holds, by
    descriptor: a link is removed itself, never followed."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        os.unlink(name, dir_fd=parent)
        return
    try:
        with os.scandir(fd) as entries:
            found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for entry, is_folder in found:
            if is_folder:
                _remove_tree(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
