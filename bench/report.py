"""Shared by the benchmarks: medians, the machine's description, and docs/benchmarks.md,
where each benchmark keeps its own section between markers."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

# BENCH_DOCS points a run elsewhere (the smoke test writes to a temporary file)
DOCS = Path(
    os.environ.get("BENCH_DOCS")
    or Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
)
HEADER = """# Benchmarks

Each section is written by the benchmark named in it, with the command that produced
it. These machines are noisy: figures are medians over repeated runs, and every
comparison is against a baseline measured in the same run on the same machine.
"""


def summary(samples: list[float]) -> tuple[float, float, float]:
    """(median, min, max) in milliseconds of samples in seconds."""
    ms = [s * 1000 for s in samples]
    return statistics.median(ms), min(ms), max(ms)


def machine() -> str:
    def version(*cmd: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return "absent"
        return out.strip().splitlines()[0] if out.strip() else "absent"

    return (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}, {version('podman', '--version')}, "
        f"{version('crun', '--version')}, {version('runc', '--version')}"
    )


def write_section(name: str, body: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{start}\n{body.strip()}\n\n_{time.strftime('%Y-%m-%d')}, {machine()}_\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOCS.write_text(text)
