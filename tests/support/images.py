"""Container images for the tests, built offline from the host's static busybox and
imported into podman. Tests that need one skip on a machine without podman or a static
busybox, and fail under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ondrop.runtime.rootfs import busybox_rootfs, static_busybox

BUSYBOX_IMAGE = "localhost/ondrop-test-busybox:1"


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
    if static_busybox() is None:
        return "no static busybox to build the test image from (apt install busybox-static)"
    return None


def require_podman() -> None:
    reason = podman_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the container tests: {reason}")
    pytest.skip(reason)


def docker_missing() -> str | None:
    """Why the container tests cannot also run on Docker here, or None when they can."""
    if shutil.which("docker") is None:
        return "docker is not installed (.ci/run installs docker.io and starts dockerd)"
    if os.geteuid() != 0:
        return "container tests run as root"
    info = subprocess.run(
        ["docker", "info", "--format", "{{.OSType}}"], capture_output=True, text=True
    )
    if info.returncode != 0:
        return f"docker is not usable (is dockerd running?): {info.stderr.strip()[-200:]}"
    if static_busybox() is None:
        return "no static busybox to build the test image from (apt install busybox-static)"
    return None


def docker_busybox_image(scratch: Path) -> str:
    """The test busybox image, imported into Docker once; skips (fails under CI) where
    Docker cannot run."""
    reason = docker_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests on Docker too: {reason}")
        pytest.skip(reason)
    exists = subprocess.run(["docker", "image", "inspect", BUSYBOX_IMAGE], capture_output=True)
    if exists.returncode != 0:
        tarball = busybox_rootfs(scratch / "busybox-rootfs.tar")
        subprocess.run(
            ["docker", "import", str(tarball), BUSYBOX_IMAGE], check=True, capture_output=True
        )
    return BUSYBOX_IMAGE


def busybox_image(scratch: Path) -> str:
    """The test busybox image, imported into podman once (it stays for later runs)."""
    require_podman()
    exists = subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE])
    if exists.returncode != 0:
        tarball = busybox_rootfs(scratch / "busybox-rootfs.tar")
        subprocess.run(
            ["podman", "import", "-q", str(tarball), BUSYBOX_IMAGE], check=True, capture_output=True
        )
    return BUSYBOX_IMAGE
