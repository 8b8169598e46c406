#!/usr/bin/env python3
"""detect: the faces in one frame, found by OpenCV's Haar cascade. Writes
<frame>.json ({"frame", "time", "label", "boxes": [{x, y, w, h}], "device", "gpu"}) and
<frame>-boxes.jpg (the frame with the boxes drawn).

OpenCV from PyPI has no CUDA: on a GPU machine the job holds its GPU
(CUDA_VISIBLE_DEVICES) and still detects on the CPU; "device" says which was used.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import cv2

CASCADE = "haarcascade_frontalface_default.xml"


def cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 dropped the Haar cascades
        sys.exit(f"detect: OpenCV {cv2.__version__} has no Haar cascades; "
                 "install opencv-python-headless<5 (the examples extra does)")  # fmt: skip
    folders = [getattr(getattr(cv2, "data", None), "haarcascades", ""),
               "/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades"]  # fmt: skip
    for folder in folders:
        path = Path(folder) / CASCADE
        if folder and path.exists():
            return cv2.CascadeClassifier(str(path))
    sys.exit(f"detect: OpenCV's {CASCADE} is not installed (opencv-python-headless<5 has it)")


def main() -> None:
    frame = Path(os.environ["INPUT_FILE_PATH"])
    out = Path(os.environ["TMP_OUTPUT_DIR"])
    image = cv2.imread(str(frame))
    if image is None:
        sys.exit(f"detect: {frame.name} is not an image OpenCV can read")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    found = cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
    boxes = [{"x": int(x), "y": int(y), "w": int(w), "h": int(h)} for x, y, w, h in found]
    for b in boxes:
        cv2.rectangle(image, (b["x"], b["y"]), (b["x"] + b["w"], b["y"] + b["h"]), (0, 220, 0), 3)
    cv2.imwrite(str(out / f"{frame.stem}-boxes.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    stamp = re.search(r"-t(\d+)$", frame.stem)
    result = {
        "frame": frame.name,
        "time": int(stamp.group(1)) / 1000 if stamp else None,
        "label": "face",
        "boxes": boxes,
        "device": "cpu",
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or "none",  # what the platform gave it
    }
    (out / f"{frame.stem}.json").write_text(json.dumps(result))
    print(f"{frame.name}: {len(boxes)} face(s)")


if __name__ == "__main__":
    main()
