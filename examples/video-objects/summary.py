#!/usr/bin/env python3
"""summary: once per video, when all of its frames are done (the service collects detect).
Reads the manifest ($INPUT_FILE_PATH) and the detections staged beside it; writes
<video>-summary.json (the objects by class, each second's objects by class, frames
missing), <video>-contact.png (a contact sheet of the frames with their labelled boxes) and
<video>-timeline.png (each class over the video's time), and prints one line: "N objects
found in M frames of VIDEO: person 4, cat 4, ...".
"""

import itertools
import json
import math
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

THUMB = (240, 135)  # width, height of a frame on the contact sheet
COLUMNS = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, DARK = (255, 255, 255), (150, 150, 150), (30, 30, 30)
# a colour per class on the timeline, in the order the classes are first seen (BGR)
PALETTE = [(60, 180, 75), (200, 130, 0), (48, 48, 230), (0, 200, 230), (180, 30, 145),
           (240, 240, 70), (75, 25, 230), (190, 190, 250), (128, 128, 0)]  # fmt: skip


def caption(objects: list[dict]) -> str:
    counts = Counter(o["label"] for o in objects)
    return ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing"


def contact_sheet(frames: list[dict], path: Path) -> None:
    tiles = []
    for d in frames:
        image = cv2.imread(str(d["image"])) if d["image"] is not None else None
        tile = np.full((THUMB[1], THUMB[0], 3), 40, np.uint8)
        if image is not None:
            scale = min(THUMB[0] / image.shape[1], THUMB[1] / image.shape[0])
            size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            tile[: size[1], : size[0]] = small
        label = f"{d['time'] or 0.0:5.1f} s  {caption(d['objects'])}"
        cv2.rectangle(tile, (0, THUMB[1] - 22), (THUMB[0], THUMB[1]), (0, 0, 0), -1)
        cv2.putText(tile, label[:34], (6, THUMB[1] - 6), FONT, 0.45, WHITE, 1, cv2.LINE_AA)
        tiles.append(cv2.copyMakeBorder(tile, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(0, 0, 0)))
    if not tiles:
        tiles.append(np.zeros((THUMB[1] + 6, THUMB[0] + 6, 3), np.uint8))
    rows = math.ceil(len(tiles) / COLUMNS)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (rows * COLUMNS - len(tiles))
    sheet = np.vstack([np.hstack(tiles[r * COLUMNS : (r + 1) * COLUMNS]) for r in range(rows)])
    cv2.imwrite(str(path), sheet)


def timeline(frames: list[dict], classes: list[str], video: str, path: Path) -> None:
    """A row per class; in it, at each frame's time, a bar as tall as the objects of that
    class in the frame (the most in one frame fills the row)."""
    left, right, top, row, axis = 130, 30, 50, 44, 40
    width = 960
    timed = [d for d in frames if d["time"] is not None]
    end = max([d["time"] for d in timed], default=0.0)
    step = min((b["time"] - a["time"] for a, b in itertools.pairwise(timed)), default=1.0) or 1.0
    end += step  # the last frame shows until the next would have been taken
    height = top + row * max(1, len(classes)) + axis
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, f"Objects in {video} over time", (left, 30), FONT, 0.7, DARK, 2, cv2.LINE_AA)
    span = width - left - right
    at = lambda t: left + round(t / end * span)  # noqa: E731
    most = max(
        [c for d in timed for c in Counter(o["label"] for o in d["objects"]).values()] or [1]
    )
    for i, label in enumerate(classes):
        y = top + i * row
        colour = PALETTE[i % len(PALETTE)]
        cv2.putText(image, label[:14], (10, y + row // 2 + 6), FONT, 0.55, DARK, 1, cv2.LINE_AA)
        cv2.line(image, (left, y + row - 4), (width - right, y + row - 4), (220, 220, 220), 1)
        for d in timed:
            n = sum(o["label"] == label for o in d["objects"])
            if n:
                tall = max(4, round((row - 10) * n / most))
                cv2.rectangle(image, (at(d["time"]) + 1, y + row - 4 - tall),
                              (at(d["time"] + step) - 1, y + row - 4), colour, -1)  # fmt: skip
    base = top + row * max(1, len(classes))
    cv2.line(image, (left, base), (width - right, base), DARK, 1)
    ticks = max(1, math.ceil(end / 10))  # at most about ten labels
    for second in range(0, math.floor(end) + 1, ticks):
        x = at(second)
        cv2.line(image, (x, base), (x, base + 6), DARK, 1)
        cv2.putText(image, f"{second} s", (x - 10, base + 24), FONT, 0.45, GREY, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), image)


def main() -> None:
    manifest_path = Path(os.environ["INPUT_FILE_PATH"])
    inputs = Path(os.environ["TMP_INPUT_DIR"])
    out = Path(os.environ["TMP_OUTPUT_DIR"])
    manifest = json.loads(manifest_path.read_text())
    video = Path(manifest["input"]["key"]).name
    stem = Path(video).stem
    frames = []  # each frame's detections, with its annotated image
    for job in manifest["jobs"]:
        if job["service"] != manifest["collected"]:
            continue  # only the frames' detect jobs bring detections
        names = job["files"]
        for name in names:
            if name.endswith(".json"):
                found = json.loads((inputs / name).read_text())
                found.setdefault("objects", [])
                found.setdefault("time", None)
                images = [n for n in names if n.endswith(".jpg")]
                found["image"] = inputs / images[0] if images else None
                frames.append(found)
    frames.sort(key=lambda d: d["time"] if d["time"] is not None else math.inf)
    missing = [j["input"] for j in manifest["jobs"]
               if j["service"] == manifest["collected"] and j["status"] != "succeeded"]  # fmt: skip
    by_class = Counter(o["label"] for d in frames for o in d["objects"])
    classes = list(dict.fromkeys(o["label"] for d in frames for o in d["objects"]))
    per_second: dict[int, Counter[str]] = {}
    for d in frames:
        if d["time"] is not None:
            per_second.setdefault(int(d["time"]), Counter()).update(
                o["label"] for o in d["objects"]
            )
    total = sum(by_class.values())
    kinds = ", ".join(f"{label} {n}" for label, n in by_class.most_common())
    line = f"{total} objects found in {len(frames)} frames of {video}" + (
        f": {kinds}" if kinds else ""
    )
    summary = {
        "input": manifest["input"],
        "frames": len(frames),
        "frames_with_objects": sum(1 for d in frames if d["objects"]),
        "objects": total,
        "by_class": dict(by_class.most_common()),
        "per_second": [{"second": s, "objects": dict(c)} for s, c in sorted(per_second.items())],
        "devices": sorted({d.get("device", "cpu") for d in frames}),
        "frames_missing": missing,
        "result": line,
    }
    (out / f"{stem}-summary.json").write_text(json.dumps(summary, indent=2))
    contact_sheet(frames, out / f"{stem}-contact.png")
    timeline(frames, classes, video, out / f"{stem}-timeline.png")
    print(line + (f" ({len(missing)} frame(s) missing)" if missing else ""))


if __name__ == "__main__":
    main()
