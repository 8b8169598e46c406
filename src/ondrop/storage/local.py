"""`local.<id>`: a folder on this machine; also the embedded default store."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ondrop.errors import InvalidKeyError, NotFoundError, StorageError
from ondrop.storage.base import TEMP_PREFIX, ObjectInfo, StorageProvider, check_key

log = logging.getLogger(__name__)


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
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{name}: cannot create its folder {self.root}: {exc}") from exc
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Remove half-written uploads of processes that are gone."""
        for entry in self.tmp.iterdir():
            pid = entry.name.partition("-")[0]
            if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
                entry.unlink(missing_ok=True)

    def path(self, key: str) -> Path:
        """The file that holds `key`; refuses keys that would leave the root (via symlinks too)."""
        target = self.root / check_key(key)
        # Only a link inside the store can lead out of it: look for one along the key's own
        # path (cheaper than resolving the whole path on every call).
        current = self.root
        for part in key.split("/"):
            current = current / part
            try:
                linked = stat.S_ISLNK(os.lstat(current).st_mode)
            except OSError:
                break  # nothing further along exists yet
            if linked:
                if not target.resolve().is_relative_to(self.root):
                    raise StorageError(f"{self.name}: {key!r} points outside the storage folder")
                break
        return target

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

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        top = self.path(prefix) if prefix else self.root
        if not top.is_dir():
            return
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(TEMP_PREFIX))
            for name in sorted(files):
                key = self.key_of(Path(folder, name))
                if key is None:
                    continue
                info = self.stat(key)
                if info is not None:
                    yield info

    def stat(self, key: str) -> ObjectInfo | None:
        """The object at `key`; None for folders, missing files and links that leave the root."""
        try:
            path = self.path(key)
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except StorageError as exc:
            log.warning("%s", exc)
            return None
        return None if stat.S_ISDIR(st.st_mode) else self._info(key, st)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{self.name}: no object {key!r}") from None

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        target = self.path(key)
        if target.is_dir():
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                with os.fdopen(os.open(temp, flags, self.mode), "wb") as out:
                    os.fchmod(out.fileno(), self.mode)
                    shutil.copyfileobj(source, out, 1 << 20)
                    if self.fsync:
                        out.flush()
                        os.fsync(out.fileno())
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
            return self._info(key, target.stat())
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot write {key!r}: {exc.strerror}") from exc

    def put_file(self, key: str, path: Path, move: bool = False) -> ObjectInfo:
        """With `move` (a file of the platform's own, such as an upload's body: never a
        job's) the file is renamed into place, given the store's mode."""
        if not move:
            return super().put_file(key, path)
        target = self.path(key)
        if target.is_dir():
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, self.mode)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # the file is complete: moving it in is atomic
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another file system: copy after all
                return super().put_file(key, path)
            raise StorageError(f"{self.name}: cannot write {key!r}: {exc.strerror}") from exc
        return self._info(key, target.stat())

    def get(self, key: str, dest: Path) -> ObjectInfo:
        source = self.path(key)
        try:
            st = source.stat()
            shutil.copyfile(source, dest)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"{self.name}: no object {key!r}") from None
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot read {key!r}: {exc.strerror}") from exc
        return self._info(key, st)

    def ensure_folder(self, path: str) -> None:
        target = self.path(path) if path else self.root
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{self.name}: cannot create folder {path!r}: {exc.strerror}"
            ) from exc

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise InvalidKeyError(f"{self.name}: {key!r} is a folder, not an object") from None
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot delete {key!r}: {exc.strerror}") from exc
