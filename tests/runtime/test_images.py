"""Unpacked images: every place a job's container mounts something is made when the image
is unpacked, so that no OCI runtime writes into the shared root filesystem when it
starts a container, where runtimes starting at once would collide."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.container import ContainerRuntime
from tests.support.images import bare_image, container_runtime

JOBS = 8


def start(runtime: ContainerRuntime, work: Path, image: str, warm: float) -> RunResult:
    work.mkdir()
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir()
    (work / "script").write_text("ls -d /proc/1 /sys/kernel /dev/null > /ondrop/output/seen")
    return runtime.run(
        RunSpec(
            job_id=f"job-{time.monotonic_ns()}",
            script=work / "script",
            workdir=work,
            env={},
            timeout=60,
            log=work / "log",
            image=image,
            service="bare",
            warm=warm,
        )
    )


@pytest.mark.parametrize("warm", [0.0, 30.0], ids=["fresh", "warm"])
def test_an_image_without_mount_points_starts_many_jobs_at_once(
    warm: float, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    image = bare_image(tmp_path_factory.mktemp("bare"))
    for round in range(3):  # each round unpacks the image afresh
        scratch = tmp_path / f"round{round}"
        scratch.mkdir()
        runtime = container_runtime("podman", scratch, oci=True)
        try:
            works = [scratch / f"job{i}" for i in range(JOBS)]
            with ThreadPoolExecutor(JOBS) as pool:
                results = list(
                    pool.map(start, [runtime] * JOBS, works, [image] * JOBS, [warm] * JOBS)
                )
            for work, result in zip(works, results, strict=True):
                assert result.ok, (work / "log").read_text()
                seen = (work / "output" / "seen").read_text().split()
                assert sorted(seen) == ["/dev/null", "/proc/1", "/sys/kernel"]
            # Every mount point is in the image, and none was made after it was unpacked.
            configs = [work / "bundle" / "config.json" for work in works]
            configs += [p / "bundle" / "config.json" for p in scratch.glob("warm-*")]
            home = runtime.images.folder / runtime.images.image(image).id
            rootfs, unpacked = home / "rootfs", (home / "ready").stat().st_mtime_ns
            destinations = {
                mount["destination"]
                for config in configs
                if config.exists()
                for mount in json.loads(config.read_text())["mounts"]
            }
            assert {"/sys", "/tmp"} <= destinations
            assert warm or "/ondrop/input" in destinations
            changed = [
                folder
                for folder, _, _ in os.walk(rootfs)
                if os.lstat(folder).st_mtime_ns > unpacked
            ]
            assert changed == []
            missing = [d for d in destinations if not os.path.lexists(rootfs / d.lstrip("/"))]
            assert missing == []
        finally:
            runtime.close()
            runtime.clean()
