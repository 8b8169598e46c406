"""Container images for the tests, built offline from the host's static busybox and
imported into podman (or Docker). Tests that need one skip on a machine without the
engine or a static busybox, and fail under CI."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from ondrop.runtime.container import ContainerRuntime
from ondrop.runtime.engine import detect
from ondrop.runtime.images import Images
from ondrop.runtime.oci import IdMap, find_oci_runtime
from ondrop.runtime.rootfs import busybox_rootfs, static_busybox

BUSYBOX_IMAGE = "localhost/ondrop-test-busybox:1"
BARE_IMAGE = "localhost/ondrop-test-bare:1"  # busybox without /proc, /sys, /dev or /tmp
# busybox run as USER 1000:1000, with a home of its user's only (0700) and a setuid program
APP_IMAGE = "localhost/ondrop-test-app:1"
APP_UID = 1000
# The host ids of the test containers' user namespace: beyond the blocks `auto` gives a
# platform (and the job uids of the process runtime's tests), so no platform's.
TEST_IDS = IdMap(2_400_000_000)


INFO_FORMAT = {"podman": "{{.Host.Arch}}", "docker": "{{.OSType}}"}


def engine_missing(engine: str = "podman") -> str | None:
    """Why container tests cannot run on `engine` here, or None when they can."""
    if shutil.which(engine) is None:
        return f"{engine} is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "container tests run as root (rootful podman, Docker's daemon)"
    info = subprocess.run(
        [engine, "info", "--format", INFO_FORMAT[engine]], capture_output=True, text=True
    )
    if info.returncode != 0:
        return f"{engine} is not usable: {info.stderr.strip()[-200:]}"
    if static_busybox() is None:
        return "no static busybox to build the test image from (apt install busybox-static)"
    return None


def require_engine(engine: str = "podman") -> None:
    reason = engine_missing(engine)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the container tests on {engine}: {reason}")
    pytest.skip(reason)


def busybox_image(scratch: Path, engine: str = "podman") -> str:
    """The test busybox image, imported into `engine` once (it stays for later runs)."""
    require_engine(engine)
    exists = subprocess.run([engine, "image", "inspect", BUSYBOX_IMAGE], capture_output=True)
    if exists.returncode != 0:
        tarball = busybox_rootfs(scratch / "busybox-rootfs.tar")
        subprocess.run(
            [engine, "import", str(tarball), BUSYBOX_IMAGE], check=True, capture_output=True
        )
    return BUSYBOX_IMAGE


def bare_image(scratch: Path, engine: str = "podman") -> str:
    """A busybox image with no /proc, /sys, /dev or /tmp folder, as minimal images come:
    every mount point of a job's container is missing from it."""
    require_engine(engine)
    exists = subprocess.run([engine, "image", "inspect", BARE_IMAGE], capture_output=True)
    if exists.returncode != 0:
        full = busybox_rootfs(scratch / "busybox-rootfs.tar")
        bare = scratch / "bare-rootfs.tar"
        with tarfile.open(full) as source, tarfile.open(bare, "w") as dest:
            for member in source.getmembers():
                if member.name.split("/")[0] not in ("proc", "sys", "dev", "tmp"):
                    dest.addfile(member, source.extractfile(member) if member.isfile() else None)
        subprocess.run([engine, "import", str(bare), BARE_IMAGE], check=True, capture_output=True)
    return BARE_IMAGE


def app_image(scratch: Path, engine: str = "podman") -> str:
    """A busybox image whose user is APP_UID, as many images' are: /home/app and the file
    /home/app/notes are that user's alone (0700, 0600), and /bin/suid is a program of
    root's with its setuid bit."""
    require_engine(engine)
    exists = subprocess.run([engine, "image", "inspect", APP_IMAGE], capture_output=True)
    if exists.returncode != 0:
        full = busybox_rootfs(scratch / "busybox-rootfs.tar")
        app = scratch / "app-rootfs.tar"
        with tarfile.open(full) as source, tarfile.open(app, "w") as dest:
            for member in source.getmembers():
                dest.addfile(member, source.extractfile(member) if member.isfile() else None)
            home = tarfile.TarInfo("home/app")
            home.type, home.mode, home.uid, home.gid = tarfile.DIRTYPE, 0o700, APP_UID, APP_UID
            dest.addfile(home)
            notes = tarfile.TarInfo("home/app/notes")
            notes.size, notes.mode, notes.uid, notes.gid = 5, 0o600, APP_UID, APP_UID
            dest.addfile(notes, io.BytesIO(b"mine\n"))
            suid = tarfile.TarInfo("bin/suid")
            suid.size, suid.mode = 3, 0o4755
            dest.addfile(suid, io.BytesIO(b"#!\n"))
        subprocess.run(
            [engine, "import", "--change", f"USER={APP_UID}:{APP_UID}", str(app), APP_IMAGE],
            check=True,
            capture_output=True,
        )
    return APP_IMAGE


def container_runtime(
    engine: str, scratch: Path, oci: bool, refused: bool = False
) -> ContainerRuntime:
    """A container runtime on `engine` with the test busybox image in it, starting its
    containers with crun or runc (`oci`) or with the engine's `run`, in a user namespace of
    TEST_IDS; its containers are named with a prefix of their own. A runtime that refuses
    its jobs here (Docker without a user namespace) skips the test, unless `refused`."""
    busybox_image(scratch, engine)
    found = detect(engine)
    assert found is not None
    runtime = find_oci_runtime() if oci else None
    if oci:
        assert runtime is not None, "crun or runc is needed"
    containers = ContainerRuntime(
        found,
        Images(found, scratch / "images", pull="never", idmap=TEST_IDS),
        runtime,
        f"ondrop-t{time.monotonic_ns() % 10**8}-",
        TEST_IDS,
    )
    if containers.problem and not refused:
        containers.close()
        pytest.skip(f"{engine} refuses container jobs here: {containers.problem}")
    return containers
