#!/usr/bin/env python3
"""Write a grayscale copy of $INPUT_FILE_PATH to $TMP_OUTPUT_DIR."""

import os
from pathlib import Path

from PIL import Image, ImageOps

source = Path(os.environ["INPUT_FILE_PATH"])
with Image.open(source) as image:
    gray = ImageOps.grayscale(image)
    target = Path(os.environ["TMP_OUTPUT_DIR"]) / source.name.replace(".thumb", ".gray")
    gray.save(target)
    print(f"{source.name}: grayscale -> {target.name}")
