"""Backpressure: a burst of 10,000 files is taken in (recorded, queued) without the
platform's memory growing with it, and a service with one file is not held back by
another's backlog."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_storage_e2e import peak_rss
from tests.support.up import Platform

pytestmark = pytest.mark.e2e
BURST = 10_000


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start("--container-engine", "none", "--concurrency", "2")
    yield platform
    platform.stop_now(0.2)


def test_a_burst_of_10000_files_is_taken_in_with_bounded_memory_and_starves_no_one(
    up: Platform, tmp_path: Path
) -> None:
    (tmp_path / "fdl.yaml").write_text("""
services:
  - name: backlog
    script: sleep 0.05
    input: [{path: heavy/in}]
  - name: single
    script: echo quick
    input: [{path: light/in}]
""")
    up.cli("apply", str(tmp_path / "fdl.yaml"))
    url = json.loads((up.data / "endpoint.json").read_text())["url"]
    auth = ("admin", json.loads((up.data / "admin.json").read_text())["password"])
    assert up.proc is not None
    before = peak_rss(up.proc.pid)
    inbox = up.data / "storage" / "heavy" / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(BURST):
        (inbox / f"f{i:05}.txt").write_text(str(i))

    def counts(service: str) -> dict[str, int]:
        answer = httpx.get(f"{url}/system/status", params={"service": service}, auth=auth)
        return dict(answer.json()["jobs"])

    deadline = time.monotonic() + 240
    while sum(counts("backlog").values()) < BURST:
        assert time.monotonic() < deadline, f"only {counts('backlog')} of {BURST} taken in"
        time.sleep(0.5)
    growth = peak_rss(up.proc.pid) - before
    assert growth < 100 * 1024**2, (
        f"taking in {BURST} files grew the platform by {growth / 1024**2:.0f} MiB"
    )
    light = up.data / "storage" / "light" / "in"
    light.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    (light / "one.txt").write_text("1")
    while counts("single").get("succeeded") != 1:
        assert time.monotonic() - started < 10, "one file waited behind a backlog"
        time.sleep(0.05)
    assert counts("backlog").get("queued", 0) > BURST // 2  # the backlog was still there
