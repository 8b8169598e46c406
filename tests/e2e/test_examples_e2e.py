"""The examples in examples/ work as their docs say, run the way a user runs them."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_e2e import Platform

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start("--container-engine", "none", "--gpus", "0")
    yield platform
    if platform.proc is not None and platform.proc.poll() is None:
        platform.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        platform.stop(signal.SIGINT)


def test_the_pools_pipeline_splits_on_faas_and_analyses_on_batch(
    up: Platform, tmp_path: Path
) -> None:
    assert "created analyse" in up.cli("apply", str(EXAMPLES / "pools" / "pipeline.yaml")).stdout
    book = tmp_path / "tale.txt"
    book.write_text(
        "Preface of the tale.\nChapter One\nThe cat sat. The cat ran!\n"
        "Chapter Two\nDogs bark loudly. Dogs sleep. Birds sing.\n"
    )
    up.cli("put", "split", str(book))
    assert up.cli("wait", "split").returncode == 0
    assert up.cli("wait", "analyse").returncode == 0
    up.cli("get", "analyse", "-o", str(tmp_path / "stats"))
    stats = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "stats").iterdir()}
    assert sorted(stats) == ["tale-00", "tale-01", "tale-02"]
    assert stats["tale-01"]["sentences"] == 2 and stats["tale-02"]["words"] == 9
    assert {s["gpu"] for s in stats.values()} == {"none"}  # gpu_optional: ran on the CPU
    status = up.cli("status").stdout
    assert "faas" in status and "batch" in status and "CPUs" in status
