#!/usr/bin/env python3
"""Draw COUNT sample photos-to-be (sunsets, planets, grids) into FOLDER, offline."""

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

folder, count = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8
folder.mkdir(parents=True, exist_ok=True)
rng = random.Random(7)
for i in range(count):
    width, height = rng.choice([(1600, 1200), (1200, 1600), (1920, 1080)])
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(12):
        r = rng.randrange(40, 260)
        x, y = rng.randrange(width), rng.randrange(height)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(255, 255, 255), width=6)
    for k in range(0, width, 120):
        draw.line(
            [(k, height), (k + int(200 * math.sin(k)), height * 2 // 3)], fill=(20, 20, 20), width=3
        )
    image.save(folder / f"sample-{i + 1:02}.{'jpg' if i % 2 else 'png'}", quality=90)
print(f"{count} sample images in {folder}")
