#!/usr/bin/env python3
"""Make a sample video offline: the astronaut's face from scikit-image's bundled photographs
moving over its rocket, encoded as H.264 MP4 by the ffmpeg in the imageio-ffmpeg wheel.

    make_sample.py OUT.mp4                       8 s: one face crosses, a second joins it
    make_sample.py OUT.mp4 --seconds 3 --face-between 1 2
                                                 one face, still, only from 1 s to 2 s

It prints when faces are on screen, as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from skimage import data, transform

WIDTH, HEIGHT = 640, 360
FACE = 160  # side of the face sprite, pixels


@dataclass
class Pass:
    """A face on screen from `start` to `end` seconds, moving from (x0, y0) to (x1, y1)."""

    start: float
    end: float
    x0: int
    y0: int
    x1: int
    y1: int
    mirrored: bool = False

    def at(self, t: float) -> tuple[int, int] | None:
        if not self.start <= t < self.end:
            return None
        k = (t - self.start) / max(self.end - self.start, 1e-9)
        return round(self.x0 + k * (self.x1 - self.x0)), round(self.y0 + k * (self.y1 - self.y0))


def _uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def background() -> np.ndarray:
    rocket = data.rocket()  # 427 x 640
    scale = max(WIDTH / rocket.shape[1], HEIGHT / rocket.shape[0])
    size = (round(rocket.shape[0] * scale), round(rocket.shape[1] * scale))
    resized = _uint8(transform.resize(rocket, size, anti_aliasing=True))
    top = (resized.shape[0] - HEIGHT) // 2
    return resized[top : top + HEIGHT, :WIDTH]


def face() -> np.ndarray:
    astronaut = data.astronaut()  # her face is at about x 177-272, y 66-161
    crop = astronaut[10:230, 115:335]
    return _uint8(transform.resize(crop, (FACE, FACE), anti_aliasing=True))


def frames(seconds: float, fps: int, passes: list[Pass]) -> Iterator[bytes]:
    back, sprite = background(), face()
    for n in range(round(seconds * fps)):
        frame = back.copy()
        for p in passes:
            where = p.at(n / fps)
            if where is not None:
                x, y = where
                frame[y : y + FACE, x : x + FACE] = sprite[:, ::-1] if p.mirrored else sprite
        yield frame.tobytes()


def write(path: Path, seconds: float, fps: int, passes: list[Pass]) -> None:
    writer = imageio_ffmpeg.write_frames(
        str(path), (WIDTH, HEIGHT), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        quality=8, macro_block_size=8, output_params=["-loglevel", "error"],
    )  # fmt: skip
    writer.send(None)
    for frame in frames(seconds, fps, passes):
        writer.send(frame)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--face-between", type=float, nargs=2, metavar=("START", "END"))
    args = parser.parse_args()
    if args.face_between:
        start, end = args.face_between
        passes = [Pass(start, end, 220, 80, 220, 80)]
    else:
        passes = [
            Pass(1.0, 7.0, 10, 30, WIDTH - FACE - 10, 10),  # across the top
            Pass(3.0, 6.0, WIDTH - FACE - 10, 190, 200, 190, mirrored=True),  # below it
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, args.seconds, args.fps, passes)
    print(json.dumps({"video": str(args.out), "faces": [[p.start, p.end] for p in passes]}))


if __name__ == "__main__":
    main()
