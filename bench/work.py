"""The per-file work every system in the benchmarks does, the same way: copy the file into
a fresh folder, run the same shell script on it as a subprocess, copy its outputs back."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "work.sh"


def process(source: str, out_dir: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        (work / "in").mkdir()
        (work / "out").mkdir()
        staged = work / "in" / Path(source).name
        shutil.copyfile(source, staged)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "INPUT_FILE_PATH": str(staged),
            "TMP_OUTPUT_DIR": str(work / "out"),
        }
        subprocess.run(["/bin/sh", str(SCRIPT)], env=env, check=True)
        for output in (work / "out").iterdir():
            shutil.copyfile(output, Path(out_dir) / output.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
