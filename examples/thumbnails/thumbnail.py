#!/usr/bin/env python3
"""Make a thumbnail of $INPUT_FILE_PATH in $TMP_OUTPUT_DIR, keeping the aspect ratio."""

import os
from pathlib import Path

from PIL import Image

source = Path(os.environ["INPUT_FILE_PATH"])
size = int(os.environ.get("THUMBNAIL_SIZE", "160"))
with Image.open(source) as image:
    image.thumbnail((size, size))
    target = Path(os.environ["TMP_OUTPUT_DIR"]) / f"{source.stem}.thumb.png"
    image.save(target)
    print(f"{source.name}: {image.width}x{image.height} thumbnail -> {target.name}")
