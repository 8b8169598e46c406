"""On a machine with NVIDIA GPUs: `ondrop up` finds them with nvidia-smi, each GPU job gets
one of its own on the batch pool, and CUDA in the job sees that one GPU and no other.

Skipped where nvidia-smi lists no GPU (CI machines have none); with ONDROP_TEST_GPU=1 set
that is a failure instead, for the machines that are meant to have one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from ondrop.pools.batch import detect_gpus
from tests.support.up import Platform

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Asks the CUDA driver (no framework needed) which devices it can see, holds the GPU for a
# second, and writes what it saw with when it ran.
CUDA_JOB = """#!/usr/bin/env python3
import ctypes, json, os, pathlib, time
start = time.time()
cuda = ctypes.CDLL("libcuda.so.1")
count, device, bus = ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(64)
assert cuda.cuInit(0) == 0, "cuInit failed"
cuda.cuDeviceGetCount(ctypes.byref(count))
cuda.cuDeviceGet(ctypes.byref(device), 0)
cuda.cuDeviceGetPCIBusId(bus, 64, device)
time.sleep(1)
seen = {"start": start, "end": time.time(), "count": count.value, "bus": bus.value.decode(),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
out = pathlib.Path(os.environ["TMP_OUTPUT_DIR"], os.environ["JOB_UUID"] + ".json")
out.write_text(json.dumps(seen))
"""


def bus_ids() -> dict[str, str]:
    """nvidia-smi's index -> PCI bus id, the physical GPU behind each id ondrop hands out."""
    listed = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,pci.bus_id", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = (line.split(",") for line in listed.splitlines() if line.strip())
    return {index.strip(): bus.strip().upper() for index, bus in pairs}


@pytest.fixture(scope="module")
def gpus() -> list[str]:
    found = detect_gpus("")
    if not found:
        if os.environ.get("ONDROP_TEST_GPU"):
            pytest.fail("ONDROP_TEST_GPU is set but nvidia-smi lists no GPU")
        pytest.skip("no NVIDIA GPU here (nvidia-smi lists none)")
    return found


@pytest.fixture
def up(tmp_path: Path, gpus: list[str]) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start("--container-engine", "none")  # GPUs as nvidia-smi finds them
    yield platform
    platform.stop_now(0.2)


def test_each_gpu_job_sees_only_the_gpu_it_was_given_and_none_share_one(
    up: Platform, gpus: list[str], tmp_path: Path
) -> None:
    assert f"GPUs {','.join(gpus)}" in up.cli("status").stdout
    (tmp_path / "cuda.py").write_text(CUDA_JOB)
    (tmp_path / "cuda.yaml").write_text(
        "services:\n"
        "  - name: cuda\n    script: cuda.py\n    gpu: 1\n"
        "    input: [{path: cuda/in}]\n    output: [{path: cuda/out}]\n"
    )
    up.cli("apply", str(tmp_path / "cuda.yaml"))
    for n in range(len(gpus) + 2):  # more jobs than GPUs: some must wait for one
        (tmp_path / f"job{n}.txt").write_text(str(n))
        up.cli("put", "cuda", str(tmp_path / f"job{n}.txt"))
    assert up.cli("wait", "cuda").returncode == 0
    up.cli("get", "cuda", "-o", str(tmp_path / "seen"))
    seen = [json.loads(p.read_text()) for p in (tmp_path / "seen").rglob("*.json")]
    assert len(seen) == len(gpus) + 2
    buses = bus_ids()
    for job in seen:
        assert job["visible"] in gpus and job["count"] == 1, job
        assert job["bus"].upper().endswith(buses[job["visible"]][-12:]), (job, buses)
    for gpu in gpus:
        spans = sorted((j["start"], j["end"]) for j in seen if j["visible"] == gpu)
        assert all(b[0] >= a[1] - 0.05 for a, b in pairwise(spans)), f"GPU {gpu} shared"


def test_the_pools_example_analyses_on_a_gpu(up: Platform, gpus: list[str], tmp_path: Path) -> None:
    up.cli("apply", str(EXAMPLES / "pools" / "pipeline.yaml"))
    book = tmp_path / "tale.txt"
    book.write_text("Preface.\nChapter One\nThe cat sat.\nChapter Two\nDogs bark.\n")
    up.cli("put", "split", str(book))
    assert up.cli("wait", "split").returncode == 0
    assert up.cli("wait", "analyse").returncode == 0
    up.cli("get", "analyse", "-o", str(tmp_path / "stats"))
    stats = [json.loads(p.read_text()) for p in (tmp_path / "stats").iterdir()]
    assert len(stats) == 3 and {s["gpu"] for s in stats} <= set(gpus)
