"""Workload 2, latency from a file landing (written and closed in a service's input folder)
to its script starting, at RATES files per second (10, 50, 200), for SECONDS each, REPEAT
(3) times; the floor is the same script started directly (subprocess), in the same run.

Targets (issue 7): at 50 files/s, p50 at most 5 ms and p99 at most 50 ms.

    .venv/bin/python bench/latency.py [--rates 10,50,200] [--seconds 10] [--repeat 3]
                                      [--floor-runs 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import Ondrop, wait_count
from report import write_section

# Bash's clock needs no process: the script's first act is to note when it started.
SCRIPT = '#!/bin/bash\necho "$EPOCHREALTIME" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def paced(count: int, rate: float) -> Iterator[int]:
    """0 to `count` - 1, the i-th at i / `rate` seconds from the first: a steady arrival."""
    started = time.perf_counter()
    for i in range(count):
        target = started + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.001, target - now))
        yield i


def through_ondrop(platform: Ondrop, name: str, rate: int, seconds: float) -> list[float]:
    """Milliseconds from each file's landing to its script's start, `rate` files a second."""
    inbox, outbox = platform.apply(name, SCRIPT)
    count = max(1, int(rate * seconds))
    landed: dict[str, float] = {}
    for i in paced(count, rate):
        path = inbox / f"f{i:05}.txt"
        path.write_text(str(i))
        landed[path.name] = time.time()
    wait_count(outbox, count, timeout=120)
    return [(float((outbox / n).read_text()) - t) * 1000 for n, t in landed.items()]


def started_directly(folder: Path, count: int) -> list[float]:
    """The floor: milliseconds from asking for the same script to its start, no platform."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "script"
    script.write_text(SCRIPT)
    found = []
    for i in range(count):
        (folder / "in").write_text(str(i))
        env = {"PATH": "/usr/bin:/bin", "INPUT_FILE_PATH": str(folder / "in"),
               "TMP_OUTPUT_DIR": str(folder)}  # fmt: skip
        asked = time.time()
        subprocess.run(["/bin/bash", str(script)], env=env, check=True, start_new_session=True)
        found.append((float((folder / "in").read_text()) - asked) * 1000)
        time.sleep(0.02)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10,50,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--floor-runs", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        floor = started_directly(Path(tmp) / "floor", args.floor_runs)
        platform = Ondrop(Path(tmp))
        try:
            for rate in [int(r) for r in args.rates.split(",")]:
                runs = [
                    through_ondrop(platform, f"lat{rate}-{n}", rate, args.seconds)
                    for n in range(args.repeat)
                ]
                p50s = [statistics.median(r) for r in runs]
                p99s = [percentile(r, 0.99) for r in runs]
                rows.append(
                    (rate, sum(map(len, runs)), statistics.median(p50s), min(p50s), max(p50s),
                     statistics.median(p99s), max(max(r) for r in runs))
                )  # fmt: skip
                print(f"{rate}/s: p50 of each run {', '.join(f'{p:.1f}' for p in p50s)} ms")
        finally:
            platform.close()
    lines = [
        "| files/s | files | p50 ms (median of runs) | p50 min | p50 max | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r} | {n} | {p50:.1f} | {lo:.1f} | {hi:.1f} | {p99:.1f} | {worst:.1f} |"
        for r, n, p50, lo, hi, p99, worst in rows
    ]
    floor_p50 = statistics.median(floor)
    lines.append(
        f"| floor: the script started directly | {len(floor)} | {floor_p50:.1f} | "
        f"{min(floor):.1f} | {max(floor):.1f} | {percentile(floor, 0.99):.1f} | {max(floor):.1f} |"
    )
    at50 = [r for r in rows if r[0] == 50]
    verdict = "no run at 50 files/s"
    if at50:
        _, _, p50, _, _, p99, _ = at50[0]
        verdict = (
            f"at 50 files/s: p50 {p50:.1f} ms (target at most 5, "
            f"{'met' if p50 <= 5 else 'missed'}), p99 {p99:.1f} ms (target at most 50, "
            f"{'met' if p99 <= 50 else 'missed'}); the platform's own share of the p50: "
            f"{p50 - floor_p50:.1f} ms"
        )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "latency",
        f"""## Workload 2: from a file landing to its script starting

`.venv/bin/python bench/latency.py --rates {args.rates} --seconds {args.seconds:g} --repeat
{args.repeat}`: files written into a service's input folder at a steady rate, {args.repeat}
runs per rate; the latency is from the moment the file was closed to the script's first
instruction (bash's `$EPOCHREALTIME`), through inotify, the store (the event fsynced),
the scheduler and the process runtime. The floor, measured in the same run, is the same
script started directly with `subprocess`: what starting bash costs on this machine.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
