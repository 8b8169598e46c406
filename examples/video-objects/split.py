#!/usr/bin/env python3
"""split: sample the frames of one video, SAMPLE_FPS a second (default 2), into JPEG files
named <video>-t<milliseconds>.jpg; each one stored starts a detect job.

ffmpeg is the one shipped in the imageio-ffmpeg wheel, or `ffmpeg` on the PATH (in an
image, Debian's).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def ffmpeg() -> str:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except ImportError:
        found = shutil.which("ffmpeg")
        if found is None:
            sys.exit("split: no ffmpeg here: install imageio-ffmpeg, or ffmpeg on the PATH")
        return found


def main() -> None:
    video = Path(os.environ["INPUT_FILE_PATH"])
    out = Path(os.environ["TMP_OUTPUT_DIR"])
    fps = float(os.environ.get("SAMPLE_FPS", "2"))
    frames = Path(os.environ.get("TMPDIR", "/tmp")) / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [ffmpeg(), "-nostdin", "-v", "error", "-i", str(video), "-vf", f"fps={fps:g}",
         "-q:v", "3", str(frames / "%06d.jpg")],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"split: ffmpeg could not read {video.name}: {done.stderr.strip()[-500:]}")
    count = 0
    for frame in sorted(frames.iterdir()):
        millis = round((int(frame.stem) - 1) * 1000 / fps)  # frame n shows time n / fps
        shutil.move(frame, out / f"{video.stem}-t{millis:08d}.jpg")  # TMPDIR may be elsewhere
        count += 1
    if count == 0:
        sys.exit(f"split: {video.name} has no frames")
    print(f"{video.name}: {count} frames, {fps:g} a second")


if __name__ == "__main__":
    main()
