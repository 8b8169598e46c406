#!/usr/bin/env python3
"""Make a sample video offline from scikit-image's bundled photographs, each filling the
screen in turn as the camera slowly closes in, encoded as H.264 MP4 by the ffmpeg in the
imageio-ffmpeg wheel.

    make_sample.py OUT.mp4                      8 s: the astronaut (a person), Chelsea (a
                                                cat), a cup of coffee, a motorbike, 2 s each
    make_sample.py OUT.mp4 --seconds 3 --only astronaut 1 2
                                                the astronaut from 1 s to 2 s only, a rocket
                                                on its pad (where nothing is found) otherwise

It prints the scenes, as JSON: [photo, start, end, what is in it].
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
# scikit-image's photographs (in its wheel: nothing is downloaded) and what is in each.
PHOTOS = {
    "astronaut": "person",
    "chelsea": "cat",
    "coffee": "cup",
    "motorcycle": "motorbike",
    "rocket": "",
}
ZOOM = 0.12  # how much closer the camera is at a scene's end than at its start
BACKGROUND = 24  # grey around a photo that does not fill the screen


@dataclass
class Scene:
    """`photo` on screen from `start` to `end` seconds, the camera closing in on it."""

    photo: str
    start: float
    end: float

    def frame(self, t: float, picture: np.ndarray) -> np.ndarray:
        """The screen at `t`: the photograph whole at the start, a little closer later."""
        k = (t - self.start) / max(self.end - self.start, 1e-9)
        h, w = picture.shape[:2]
        keep = 1 - ZOOM * k  # of the photograph's height and width, about its centre
        ch, cw = round(h * keep), round(w * keep)
        top, left = (h - ch) // 2, (w - cw) // 2
        return fit(picture[top : top + ch, left : left + cw])


def fit(image: np.ndarray) -> np.ndarray:
    """`image` scaled to fit the screen whole, grey around it, as 8-bit RGB."""
    scale = min(WIDTH / image.shape[1], HEIGHT / image.shape[0])
    size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    resized = transform.resize(image, size, anti_aliasing=True, preserve_range=True)
    screen = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    top, left = (HEIGHT - size[0]) // 2, (WIDTH - size[1]) // 2
    screen[top : top + size[0], left : left + size[1]] = np.clip(resized, 0, 255).astype(np.uint8)
    return screen


def photo(name: str) -> np.ndarray:
    """The photograph as 8-bit RGB."""
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.asarray(image[..., :3], dtype=np.uint8)


def frames(seconds: float, fps: int, scenes: list[Scene]) -> Iterator[bytes]:
    pictures = {s.photo: photo(s.photo) for s in scenes}
    for n in range(round(seconds * fps)):
        t = n / fps
        scene = next((s for s in scenes if s.start <= t < s.end), None)
        if scene is None:
            scene = Scene("rocket", 0, seconds)
            pictures.setdefault("rocket", photo("rocket"))
        yield np.ascontiguousarray(scene.frame(t, pictures[scene.photo])).tobytes()


def write(path: Path, seconds: float, fps: int, scenes: list[Scene]) -> None:
    writer = imageio_ffmpeg.write_frames(
        str(path), (WIDTH, HEIGHT), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        quality=8, macro_block_size=8, output_params=["-loglevel", "error"],
    )  # fmt: skip
    writer.send(None)
    for frame in frames(seconds, fps, scenes):
        writer.send(frame)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--only", nargs=3, metavar=("PHOTO", "START", "END"))
    args = parser.parse_args()
    if args.only:
        name, start, end = args.only
        if name not in PHOTOS:
            parser.error(f"--only: no photograph {name!r}; one of {', '.join(PHOTOS)}")
        scenes = [Scene(name, float(start), float(end))]
    else:
        names = [n for n in PHOTOS if PHOTOS[n]]
        each = args.seconds / len(names)
        scenes = [Scene(n, i * each, (i + 1) * each) for i, n in enumerate(names)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, args.seconds, args.fps, scenes)
    print(json.dumps([[s.photo, s.start, s.end, PHOTOS[s.photo]] for s in scenes]))


if __name__ == "__main__":
    main()
