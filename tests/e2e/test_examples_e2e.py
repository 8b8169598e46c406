"""The examples in examples/ work as their docs say, run the way a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import require_engine
from tests.support.servers import unavailable
from tests.support.up import Platform

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start("--container-engine", "none", "--gpus", "0")
    yield platform
    platform.stop_now(0.2)


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


VIDEO = EXAMPLES / "video-objects"


def video_fdl(detect: str) -> str:
    """The demo's FDL with `detect` as the detect service's script, the others found by
    their whole paths (the FDL is written elsewhere)."""
    fdl = (
        (VIDEO / "video-objects.yaml").read_text().replace("script: detect.py", f"script: {detect}")
    )
    for name in ("split.py", "summary.py"):
        fdl = fdl.replace(f"script: {name}", f"script: {VIDEO / name}")
    return fdl


def demo(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """What `make demo` runs, on a data folder of the test's own."""
    return subprocess.run(
        [sys.executable, str(VIDEO / "demo.py"), "--data", str(tmp_path / "demo"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_video_chain_finds_the_face_only_where_it_is_and_sums_up_once(
    up: Platform, tmp_path: Path
) -> None:
    """The demo's chain on a tiny clip: a face on screen from 1 s to 2 s of 3 s. The
    detect job of the frame at 1 s fails once and is retried: the summary waits for it,
    and is made once."""
    flaky = (
        "|\n      #!/bin/sh\n"
        '      case "$INPUT_FILE_PATH" in *-t00001000.jpg)\n'
        '        [ "$JOB_ATTEMPT" = 1 ] && exit 9;; esac\n'
        f"      exec python3 {VIDEO / 'detect.py'}"
    )
    (tmp_path / "chain.yaml").write_text(video_fdl(flaky))
    up.cli("apply", str(tmp_path / "chain.yaml"))
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [sys.executable, str(VIDEO / "make_sample.py"), str(clip), "--seconds", "3",
         "--face-between", "1", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    up.cli("put", "split", str(clip))
    summary = up.data / "storage" / "videos" / "summary" / "clip-summary.json"
    deadline = time.monotonic() + 120
    while not summary.exists():
        assert time.monotonic() < deadline, up.cli("jobs", "detect").stdout
        time.sleep(0.2)
    detections = up.data / "storage" / "videos" / "detections"
    found = {
        p.stem: len(json.loads(p.read_text())["boxes"]) for p in sorted(detections.glob("*.json"))
    }
    # split: 3 s at 2 frames a second; detect: the face at 1.0 and 1.5 s only
    assert found == {
        "clip-t00000000": 0, "clip-t00000500": 0, "clip-t00001000": 1,
        "clip-t00001500": 1, "clip-t00002000": 0, "clip-t00002500": 0,
    }  # fmt: skip
    result = json.loads(summary.read_text())
    assert (result["frames"], result["faces"], result["frames_missing"]) == (6, 2, [])
    assert result["result"] == "2 faces found in 6 frames of clip.mp4"
    assert (up.data / "storage" / "videos" / "summary" / "clip-contact.png").stat().st_size > 0
    jobs = json.loads(up.cli("jobs", "detect", "--json").stdout)
    retried = [j for j in jobs if j["input"].endswith("-t00001000.jpg")]
    assert [(j["attempts"], j["status"]) for j in retried] == [(2, "Succeeded")]
    time.sleep(1)  # nothing more comes
    summaries = json.loads(up.cli("jobs", "summary", "--json").stdout)
    assert [(s["status"], s["input"]) for s in summaries] == [("Succeeded", "videos/in/clip.mp4")]


def test_the_demo_runs_end_to_end_and_prints_its_result(tmp_path: Path) -> None:
    """What `make demo` runs: a platform of its own, the sample, every stage, the result."""
    done = demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "18 faces found in 16 frames of sample.mp4" in done.stdout
    summary = tmp_path / "demo" / "storage" / "videos" / "summary"
    assert sorted(p.name for p in summary.iterdir()) == [
        "sample-contact.png", "sample-summary.json",
    ]  # fmt: skip
    assert not (tmp_path / "demo" / "endpoint.json").exists()  # the platform was stopped


def test_the_demo_fails_when_a_stage_fails(tmp_path: Path) -> None:
    """Jobs that failed make the demo fail, after it says why, whatever the result shows."""
    broken = "|\n      #!/bin/sh\n      echo 'no cascade here' >&2; exit 3"
    fdl = video_fdl(broken).replace("retries: 2", "retries: 0")
    (tmp_path / "broken.yaml").write_text(fdl)
    done = demo(tmp_path, "--fdl", str(tmp_path / "broken.yaml"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no cascade here" in done.stdout
    assert "16 job(s) failed" in done.stderr


def test_the_demo_on_the_container_runtime(tmp_path: Path) -> None:
    """The same chain with every script in localhost/video-objects:1 (Debian's ffmpeg and
    Python, OpenCV from PyPI), which examples/video-objects/image/build.sh makes and
    .ci/run builds before the tests."""
    require_engine()
    if subprocess.run(["podman", "image", "exists", "localhost/video-objects:1"]).returncode:
        unavailable("no localhost/video-objects:1 image: make it with "
                    "examples/video-objects/image/build.sh")  # fmt: skip
    done = demo(tmp_path, "--fdl", str(VIDEO / "video-objects-container.yaml"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "18 faces found in 16 frames of sample.mp4" in done.stdout
    jobs = tmp_path / "demo" / "storage" / "videos" / "detections"
    assert {json.loads(p.read_text())["device"] for p in jobs.glob("*.json")} == {"cpu"}
