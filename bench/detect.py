"""Frames per second of the video demo's detect (YOLOv4-tiny through OpenCV), through
ondrop and bare, in the same run.

    .venv/bin/python bench/detect.py [--seconds 16] [--repeat 3]

The sample clip (examples/video-objects/make_sample.py) is cut into frames at 2 a second
as split does. Bare: the detector loaded once and run on every frame in a loop (the
floor), and detect.py started once per frame, one after the other (what one job per
frame costs without a platform). Through ondrop: a fresh `ondrop up`, the demo's FDL,
the clip uploaded; the chain's frames per second from the upload to the summary stored,
and the detect stage's alone (from split's frames stored to the last detection stored).
Each system forced onto the CPU (DETECT_DEVICE=cpu) and, where OpenCV has CUDA and a GPU
is there, the same again on the GPU: the seed's claim is at least 10x the CPU's frames
per second end to end through the chain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import imageio_ffmpeg  # type: ignore[import-untyped]
from harness import BIN, Ondrop
from report import write_section

VIDEO = Path(__file__).resolve().parent.parent / "examples" / "video-objects"
FPS = 2  # frames sampled a second, as the demo's split


def detect_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detect", VIDEO / "detect.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frames_of(clip: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip),
         "-vf", f"fps={FPS}", "-q:v", "3", str(folder / "%06d.jpg")],
        check=True,
    )  # fmt: skip
    return sorted(folder.glob("*.jpg"))


def cuda_here() -> bool:
    cuda = getattr(cv2, "cuda", None)
    return cuda is not None and cuda.getCudaEnabledDeviceCount() > 0


def bare_loop(frames: list[Path], device: str) -> float:
    """Frames per second with the detector loaded once."""
    detect = detect_module()
    before = dict(os.environ)
    os.environ["DETECT_DEVICE"] = device  # what detect.py reads, for this process only
    if device == "cuda":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    try:
        model, names, _ = detect.network(detect.files())
    finally:  # the platforms started later inherit none of it
        os.environ.clear()
        os.environ.update(before)
    images = [cv2.imread(str(f)) for f in frames]
    detect.detect(model, names, images[0])  # the first run sets the network up
    started = time.perf_counter()
    for image in images:
        detect.detect(model, names, image)
    return len(images) / (time.perf_counter() - started)


def bare_processes(frames: list[Path], out: Path, device: str) -> float:
    """Frames per second with detect.py started for each frame, one at a time."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMP_OUTPUT_DIR": str(out), "DETECT_DEVICE": device}
    if device == "cuda":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    started = time.perf_counter()
    for frame in frames:
        at = {**env, "INPUT_FILE_PATH": str(frame)}
        subprocess.run([sys.executable, str(VIDEO / "detect.py")], env=at, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return len(frames) / (time.perf_counter() - started)


def stored_at(folder: Path, pattern: str) -> list[float]:
    """When each file matching `pattern` in a folder of the platform's store was written
    (the API's job times are whole seconds, too coarse for a few seconds of work)."""
    return [p.stat().st_mtime for p in folder.glob(pattern)]


def through_ondrop(scratch: Path, clip: Path, device: str) -> dict[str, Any]:
    """The chain once on a fresh platform: frames per second end to end and of detect."""
    fdl = (VIDEO / "video-objects.yaml").read_text()
    for name in ("split.py", "detect.py", "summary.py"):
        fdl = fdl.replace(f"script: {name}", f"script: {VIDEO / name}")
    variables = f"    environment:\n      variables:\n        DETECT_DEVICE: {device}\n"
    fdl = fdl.replace("    gpu_optional: true\n", "    gpu_optional: true\n" + variables)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "chain.yaml").write_text(fdl)
    platform = Ondrop(scratch)
    try:
        env = {**os.environ, "ONDROP_DATA": str(platform.data)}
        subprocess.run([str(BIN / "ondrop"), "apply", str(scratch / "chain.yaml")], env=env,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        started = time.time()
        platform.client.upload("minio.default", f"videos/in/{clip.name}", clip)
        while not platform.client.jobs("summary"):
            time.sleep(0.05)
        platform.ended("summary")
        detects = platform.client.jobs("detect")
        frames = len(detects)
        assert frames and all(j["status"] == "Succeeded" for j in detects.values())
        videos = platform.data / "storage" / "videos"
        ended = max(stored_at(videos / "summary", "*-summary.json"))
        landed = max(stored_at(videos / "frames", "*.jpg"))  # split stores them together
        last = max(stored_at(videos / "detections", "*.json"))
        made = videos / "detections"
        devices = sorted({json.loads(p.read_text())["device"] for p in made.glob("*.json")})
        return {
            "chain": frames / (ended - started),
            "detect": frames / (last - landed),
            "frames": frames,
            "devices": devices,
        }
    finally:
        platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=16.0, help="of the sample clip")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if cuda_here() else ["cpu"]
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        clip = scratch / "clip.mp4"
        make = [sys.executable, str(VIDEO / "make_sample.py"), str(clip)]
        subprocess.run([*make, "--seconds", f"{args.seconds:g}"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        frames = frames_of(clip, scratch / "frames")
        for device in devices:
            found = rows.setdefault(device, {})
            for r in range(args.repeat):
                found.setdefault("loop", []).append(bare_loop(frames, device))
                found.setdefault("processes", []).append(
                    bare_processes(frames, scratch / f"out-{device}-{r}", device)
                )
                on = through_ondrop(scratch / f"ondrop-{device}-{r}", clip, device)
                assert on["frames"] == len(frames) and on["devices"] == [device], on
                found.setdefault("chain", []).append(on["chain"])
                found.setdefault("detect", []).append(on["detect"])
                print(f"{device} round {r + 1}: " + ", ".join(
                    f"{k} {v[-1]:.1f}" for k, v in found.items()), flush=True)  # fmt: skip
    median = {d: {k: statistics.median(v) for k, v in f.items()} for d, f in rows.items()}
    labels = {
        "loop": "bare: the detector loaded once, every frame in a loop",
        "processes": "bare: detect.py started per frame, one at a time",
        "detect": "ondrop: the detect stage (the frames stored to the last detection stored)",
        "chain": "ondrop: the chain end to end (upload to the summary stored)",
    }
    heads = " | ".join(d.upper() for d in devices)
    lines = [
        f"| frames per second (median) | {heads} | vs the loop (CPU) |",
        "|---|" + "---|" * len(devices) + "---|",
    ]
    for key, label in labels.items():
        values = " | ".join(f"{median[d][key]:.1f}" for d in devices)
        lines.append(f"| {label} | {values} | {median['cpu'][key] / median['cpu']['loop']:.2f} |")
    table = "\n".join(lines)
    if "cuda" in median:
        gain = median["cuda"]["chain"] / median["cpu"]["chain"]
        verdict = (f"GPU / CPU end to end through the chain: {gain:.1f}x (the claim: at least "
                   f"10x, {'met' if gain >= 10 else 'missed'})")  # fmt: skip
    else:
        verdict = (
            "no GPU with CUDA in this run (OpenCV "
            f"{cv2.__version__} sees none): the seed's claim, at least 10x the CPU's frames "
            "per second end to end on a GPU, is unchecked here; the same command on a "
            "machine with a GPU and a CUDA build of OpenCV measures it"
        )
    print(table)
    print(verdict)
    write_section(
        "detect",
        f"""## Objects in video: detect on the CPU (and a GPU where there is one)

`.venv/bin/python bench/detect.py --seconds {args.seconds:g} --repeat {args.repeat}`. The demo's
sample clip, {len(frames)} frames at {FPS} a second; YOLOv4-tiny (416 x 416) through OpenCV
{cv2.__version__}'s DNN module. Bare figures are the detector alone; ondrop's are the demo's
chain on a fresh `ondrop up` (split, one detect job per frame, summary), the jobs as
scripts on the host, each detect job a Python of its own that loads the network
(about 0.3 s of its time here). Medians of {args.repeat} rounds.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
