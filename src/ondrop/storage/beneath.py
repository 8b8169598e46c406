"""Files reached from a folder's descriptor through no link: how local storage opens
every key. The kernel's openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where it has
it (Python has no wrapper: a raw syscall), else one component at a time with O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat

# openat2(2): the same number on both; elsewhere the walk does.
SYS_OPENAT2: int | None = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
FOLDER = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
CHUNK = 1 << 30


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_HOWS: dict[int, _OpenHow] = {}  # one struct per flags, made once: the hot path's cost
_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))


def openat2(dirfd: int, path: str, flags: int) -> int:
    """openat2(dirfd, path, flags) beneath `dirfd`, through no link; OSError as os.open's."""
    how = _HOWS.get(flags)
    if how is None:
        how = _HOWS.setdefault(
            flags, _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        )
    assert SYS_OPENAT2 is not None
    name = os.fsencode(path)
    for _ in range(100):
        fd = _libc.syscall(
            ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), name, ctypes.byref(how), _SIZE
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code not in (errno.EINTR, errno.EAGAIN):  # EAGAIN: a rename raced the lookup
            break
    raise OSError(code, os.strerror(code), path)


def _has_openat2(dirfd: int) -> bool:
    """Whether this kernel (and its seccomp filter) gives openat2."""
    if SYS_OPENAT2 is None:
        return False
    try:
        os.close(openat2(dirfd, ".", FOLDER))
    except OSError:
        return False
    return True


class Beneath:
    """Opens paths under the folder open as `top` (which the caller keeps open)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.resolver = "openat2" if _has_openat2(top) else "walk"

    def open(self, path: str, flags: int) -> int:
        """A descriptor of `path`, reached through no link. A link as the last component
        gives ELOOP, or with O_PATH in the walk the link itself (its fstat says so)."""
        if self.resolver == "openat2":
            return openat2(self.top, path, flags)
        *folders, last = path.split("/")
        fd = self.top
        try:
            for part in folders:
                below = os.open(part, FOLDER | os.O_NOFOLLOW, dir_fd=fd)
                if fd != self.top:
                    os.close(fd)
                fd = below
            return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            if fd != self.top:
                os.close(fd)

    def folder(self, path: str, flags: int = os.O_PATH, create: bool = False) -> int:
        """A descriptor of the folder `path` ('' the top one), made first with `create`
        (mkdir under the descriptor of its parent: never through a link either)."""
        if not path:
            return os.open(".", flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.top)
        try:
            return self.open(path, flags | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                raise
        fd = os.dup(self.top)
        try:
            for part in path.split("/"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                below = os.open(part, FOLDER | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = below
            if flags != os.O_PATH:
                below = os.open(".", flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = below
        except BaseException:
            os.close(fd)
            raise
        return fd

    def link_along(self, path: str) -> str | None:
        """The first part of `path` that is a link ('a/b' of 'a/b/c'), or None: after an
        open failed, to say why."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            here = "/".join(parts[:i])
            try:
                st = os.stat(here, dir_fd=self.top, follow_symlinks=False)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return here
        return None


def copy(source: int, dest: int) -> None:
    """Copy `source` to `dest` in the kernel (sendfile), else through a buffer."""
    try:
        while os.sendfile(dest, source, None, CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dest, view) :]
