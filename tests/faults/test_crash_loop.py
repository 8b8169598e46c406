"""Fault test 1: bursts of files with the platform killed (-9) at a random moment, again
and again. Afterwards every input has exactly one output, every job succeeded, nothing
is left in the work folders. `make soak` runs bigger rounds (ONDROP_FAULT_ROUNDS,
ONDROP_FAULT_FILES)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.up import Platform
from tests.support.workspaces import leftovers

pytestmark = pytest.mark.e2e
ROUNDS = int(os.environ.get("ONDROP_FAULT_ROUNDS", "5"))
FILES = int(os.environ.get("ONDROP_FAULT_FILES", "300"))

SCRIPT = """#!/bin/sh
sleep 0.01
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").out"
"""


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    up = Platform(tmp_path / "data")
    yield up
    up.stop_now(0.2)


def test_kill_minus_9_at_random_moments_loses_and_duplicates_nothing(
    platform: Platform, tmp_path: Path
) -> None:
    rng = random.Random(20261126)
    (tmp_path / "copy.sh").write_text(SCRIPT)
    (tmp_path / "copy.yaml").write_text("""
services:
  - name: copy
    script: copy.sh
    input: [{path: burst/in}]
    output: [{path: burst/out}]
""")
    platform.start("--container-engine", "none")
    platform.cli("apply", str(tmp_path / "copy.yaml"))
    inbox = platform.data / "storage" / "burst" / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    names = []
    for round_ in range(ROUNDS):
        for i in range(FILES):
            name = f"r{round_}-{i:04}.txt"
            (inbox / name).write_text(f"round {round_} file {i}\n")
            names.append(name)
        time.sleep(rng.uniform(0.0, 1.5))
        platform.stop(signal.SIGKILL)
        platform.start("--container-engine", "none")
    waited = platform.cli("wait", "copy", "--timeout", "600", check=False)
    if waited.returncode != 0:
        print(platform.cli("jobs", "copy", "--status", "Failed").stdout[:3000])
    assert waited.returncode == 0
    out = platform.data / "storage" / "burst" / "out"
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(f"{n}.out" for n in names), "an input has no output, or extra"
    for name in rng.sample(names, 20):
        assert (out / f"{name}.out").read_bytes() == (inbox / name).read_bytes()
    url = json.loads((platform.data / "endpoint.json").read_text())["url"]
    password = json.loads((platform.data / "admin.json").read_text())["password"]
    answer = httpx.get(
        f"{url}/system/logs/copy", params={"limit": 0}, auth=("admin", password), timeout=60
    )
    assert answer.status_code == 200, answer.text
    jobs = answer.json()["jobs"]
    inputs = [j["input"] for j in jobs.values()]
    assert len(inputs) == len(set(inputs)) == len(names), "an input started two jobs"
    assert {j["status"] for j in jobs.values()} == {"Succeeded"}
    assert leftovers(platform.data / "work") == []
    print(
        f"\ncrash loop: {ROUNDS} rounds x {FILES} files, {len(names)} inputs, "
        f"{len(produced)} outputs, 0 lost, 0 duplicated"
    )
