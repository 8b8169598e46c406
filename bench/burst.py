"""Workload 4, a burst: FILES (10,000) dropped at once into a service's input folder. All
are processed, none lost or duplicated; the platform's peak memory and the time to
drain are measured, next to the rate of a REFERENCE-file (2,000) run of workload 1.

Targets (issue 7): peak RSS at most 250 MB; draining within 1.25x of workload 1's rate.

    .venv/bin/python bench/burst.py [--files 10000] [--reference 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import Ondrop, make_files, ondrop_drop, wait_count
from report import write_section
from work import SCRIPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        reference = ondrop_drop(make_files(scratch / "ref-files", args.reference), scratch / "ref")
        platform = Ondrop(scratch / "burst")
        try:
            inbox, outbox = platform.apply("copy", SCRIPT.read_text())
            _, before = platform.rss()
            started = time.perf_counter()
            make_files(inbox, args.files)  # written straight into the input folder
            wait_count(outbox, args.files, timeout=3600)
            drained = time.perf_counter() - started
            _, peak = platform.rss()
            jobs = platform.ended("copy")
        finally:
            platform.close()
    inputs = [j["input"] for j in jobs.values()]
    lost = args.files - len(set(inputs))
    duplicated = len(inputs) - len(set(inputs))
    failed = sum(j["status"] != "Succeeded" for j in jobs.values())
    rate = args.files / drained
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| files | {args.files} |",
        f"| drained in | {drained:.1f} s ({rate:.0f} jobs/s) |",
        f"| workload 1 rate in this run ({args.reference} files) | {reference:.0f} jobs/s |",
        f"| peak RSS of the platform | {peak / 1e6:.0f} MB (before the burst: "
        f"{before / 1e6:.0f} MB) |",
        f"| lost, duplicated, failed | {lost}, {duplicated}, {failed} |",
    ]
    ok_rate = rate * 1.25 >= reference
    verdict = (
        f"peak RSS {peak / 1e6:.0f} MB (target at most 250, "
        f"{'met' if peak <= 250e6 else 'missed'}); drain rate {rate:.0f} jobs/s vs "
        f"{reference:.0f} (target within 1.25x, {'met' if ok_rate else 'missed'}); "
        f"{lost} lost, {duplicated} duplicated"
    )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "burst",
        f"""## Workload 4: a burst of {args.files:,} files

`.venv/bin/python bench/burst.py --files {args.files} --reference {args.reference}`: the
files are written straight into the input folder of a copy service as fast as Python
can, then the platform drains them.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
