#!/usr/bin/env python3
"""Measure one chapter: words, sentences, the most common words; on the GPU it was given,
if any (this example does it on the CPU either way and says which it had)."""

import collections
import json
import os
import re
from pathlib import Path

source = Path(os.environ["INPUT_FILE_PATH"])
text = source.read_text()
words = re.findall(r"[a-z']+", text.lower())
stats = {
    "chapter": source.stem,
    "words": len(words),
    "sentences": len(re.findall(r"[.!?]+", text)),
    "top": collections.Counter(w for w in words if len(w) > 3).most_common(5),
    "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or "none",
}
(Path(os.environ["TMP_OUTPUT_DIR"]) / f"{source.stem}.json").write_text(json.dumps(stats))
print(f"{source.stem}: {stats['words']} words on GPU {stats['gpu']}")
