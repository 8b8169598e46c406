"""Workload 5, an idle platform: memory and CPU of `ondrop up` with services applied and
nothing to do, over SECONDS (30).

Targets (issue 7): under 100 MB and under 1% of a core.

    .venv/bin/python bench/idle.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import Ondrop
from report import write_section
from work import SCRIPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Ondrop(Path(tmp))
        try:
            for name in ("copy", "thumbs", "reports"):
                platform.apply(name, SCRIPT.read_text())
            time.sleep(3)  # settle after start-up
            cpu_before, started = platform.cpu_seconds(), time.monotonic()
            time.sleep(args.seconds)
            cpu = (platform.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            rss, _ = platform.rss()
        finally:
            platform.close()
    verdict = (
        f"RSS {rss / 1e6:.0f} MB (target under 100, {'met' if rss < 100e6 else 'missed'});"
        f" CPU {cpu * 100:.2f}% of a core (target under 1%, "
        f"{'met' if cpu < 0.01 else 'missed'})"
    )
    print(verdict)
    write_section(
        "idle",
        f"""## Workload 5: an idle platform

`.venv/bin/python bench/idle.py --seconds {args.seconds:g}`: `ondrop up` with three services
watching their folders and nothing arriving, measured over {args.seconds:g} s.

{verdict}.""",
    )


if __name__ == "__main__":
    main()
