#!/usr/bin/env python3
"""summary: once per video, when all of its frames are done (the service collects detect).
Reads the manifest ($INPUT_FILE_PATH) and the detections staged beside it; writes
<video>-summary.json (detections per second, frames missing) and <video>-contact.png (a
contact sheet of the annotated frames), and prints one line: "N faces found in M frames".
"""

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

THUMB = (240, 135)  # width, height of a frame on the contact sheet
COLUMNS = 4


def contact_sheet(frames: list[tuple[float, Path | None, int]], path: Path) -> None:
    tiles = []
    for time, image_path, faces in frames:
        image = cv2.imread(str(image_path)) if image_path is not None else None
        tile = np.full((THUMB[1], THUMB[0], 3), 40, np.uint8)
        if image is not None:
            scale = min(THUMB[0] / image.shape[1], THUMB[1] / image.shape[0])
            size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            tile[: size[1], : size[0]] = small
        label = f"{time:6.1f} s  {faces} face{'s' if faces != 1 else ''}"
        cv2.rectangle(tile, (0, THUMB[1] - 22), (THUMB[0], THUMB[1]), (0, 0, 0), -1)
        cv2.putText(tile, label, (6, THUMB[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
        tiles.append(cv2.copyMakeBorder(tile, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(0, 0, 0)))
    if not tiles:
        tiles.append(np.zeros((THUMB[1] + 6, THUMB[0] + 6, 3), np.uint8))
    rows = math.ceil(len(tiles) / COLUMNS)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (rows * COLUMNS - len(tiles))
    sheet = np.vstack([np.hstack(tiles[r * COLUMNS : (r + 1) * COLUMNS]) for r in range(rows)])
    cv2.imwrite(str(path), sheet)


def main() -> None:
    manifest_path = Path(os.environ["INPUT_FILE_PATH"])
    inputs = Path(os.environ["TMP_INPUT_DIR"])
    out = Path(os.environ["TMP_OUTPUT_DIR"])
    manifest = json.loads(manifest_path.read_text())
    video = Path(manifest["input"]["key"]).name
    stem = Path(video).stem
    detections = []  # each frame's detections, with its annotated image
    for job in manifest["jobs"]:
        names = job["files"]
        for name in names:
            if name.endswith(".json"):
                found = json.loads((inputs / name).read_text())
                images = [n for n in names if n.endswith(".jpg")]
                found["image"] = inputs / images[0] if images else None
                detections.append(found)
    detections.sort(key=lambda d: d["time"] if d["time"] is not None else math.inf)
    missing = [j["input"] for j in manifest["jobs"]
               if j["service"] == manifest["collected"] and j["status"] != "succeeded"]  # fmt: skip
    per_second: dict[int, int] = {}
    for d in detections:
        if d["time"] is not None:
            second = int(d["time"])
            per_second[second] = per_second.get(second, 0) + len(d["boxes"])
    faces = sum(len(d["boxes"]) for d in detections)
    with_faces = sum(1 for d in detections if d["boxes"])
    line = f"{faces} faces found in {len(detections)} frames of {video}"
    summary = {
        "input": manifest["input"],
        "frames": len(detections),
        "frames_with_faces": with_faces,
        "faces": faces,
        "per_second": [{"second": s, "faces": n} for s, n in sorted(per_second.items())],
        "frames_missing": missing,
        "result": line,
    }
    (out / f"{stem}-summary.json").write_text(json.dumps(summary, indent=2))
    frames = [(d["time"] or 0.0, d["image"], len(d["boxes"])) for d in detections]
    contact_sheet(frames, out / f"{stem}-contact.png")
    print(line + (f" ({len(missing)} frame(s) missing)" if missing else ""))


if __name__ == "__main__":
    main()
