"""A minimal root filesystem made offline from the host's static busybox: a base image
for machines that cannot reach a registry (`ondrop image busybox`)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from ondrop.errors import ExecutionError

FOLDERS = ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "run", "home"]
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def static_busybox() -> Path | None:
    """The host's busybox when it is statically linked (Debian: busybox-static)."""
    binary = shutil.which("busybox")
    if binary is None:
        return None
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
    static = ldd.returncode != 0 or "not a dynamic" in ldd.stdout + ldd.stderr
    return Path(binary) if static else None


def busybox_rootfs(dest: Path) -> Path:
    """Write a tarball of a root filesystem with busybox and all its applets to `dest`."""
    busybox = static_busybox()
    if busybox is None:
        raise ExecutionError(
            "no static busybox on this machine: install it (Debian: apt install busybox-static)"
        )
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(dest, "w") as tar:
        for folder in FOLDERS:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for name, text in FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest
