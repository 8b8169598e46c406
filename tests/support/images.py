"""Container images for the tests, built offline: a busybox root filesystem from the
host's static busybox, imported into podman. Tests that need one skip on a machine
without podman or a static busybox, and fail under CI."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

BUSYBOX_IMAGE = "localhost/ondrop-test-busybox:1"


def _static_busybox() -> Path | None:
    binary = shutil.which("busybox")
    if binary is None:
        return None
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
    return (
        Path(binary) if ldd.returncode != 0 or "not a dynamic" in ldd.stdout + ldd.stderr else None
    )


def podman_missing() -> str | None:
    """Why container tests cannot run here, or None when they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "container tests run as root (rootful podman)"
    info = subprocess.run(
        ["podman", "info", "--format", "{{.Host.Arch}}"], capture_output=True, text=True
    )
    if info.returncode != 0:
        return f"podman is not usable: {info.stderr.strip()[-200:]}"
    if _static_busybox() is None:
        return "no static busybox to build the test image from (apt install busybox-static)"
    return None


def require_podman() -> None:
    reason = podman_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the container tests: {reason}")
    pytest.skip(reason)


def busybox_rootfs_tar(dest: Path) -> Path:
    """A tarball of a root filesystem holding busybox and its applets."""
    busybox = _static_busybox()
    assert busybox is not None
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(dest, "w") as tar:
        for folder in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "run"]:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for name, text in [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


def busybox_image(scratch: Path) -> str:
    """The test busybox image, imported into podman once (it stays for later runs)."""
    require_podman()
    exists = subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE])
    if exists.returncode != 0:
        tarball = busybox_rootfs_tar(scratch / "busybox-rootfs.tar")
        subprocess.run(
            ["podman", "import", "-q", str(tarball), BUSYBOX_IMAGE], check=True, capture_output=True
        )
    return BUSYBOX_IMAGE
