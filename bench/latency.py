"""Workload 2, latency from a file landing (written and closed in a service's input folder)
to its script starting, at RATES files per second (10, 50, 200), for SECONDS each.

Targets (issue 7): at 50 files/s, p50 at most 5 ms and p99 at most 50 ms.

    .venv/bin/python bench/latency.py [--rates 10,50,200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import Ondrop, wait_count
from report import write_section

# Bash's clock needs no process: the script's first act is to note when it started.
SCRIPT = '#!/bin/bash\necho "$EPOCHREALTIME" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10,50,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        platform = Ondrop(Path(tmp))
        try:
            for rate in [int(r) for r in args.rates.split(",")]:
                name = f"lat{rate}"
                inbox, outbox = platform.apply(name, SCRIPT)
                count = int(rate * args.seconds)
                landed: dict[str, float] = {}
                started = time.perf_counter()
                for i in range(count):
                    target = started + i / rate
                    while (now := time.perf_counter()) < target:
                        time.sleep(min(0.001, target - now))
                    path = inbox / f"f{i:05}.txt"
                    path.write_text(str(i))
                    landed[path.name] = time.time()
                wait_count(outbox, count, timeout=120)
                latencies = [
                    (float((outbox / n).read_text()) - t) * 1000 for n, t in landed.items()
                ]
                rows.append(
                    (
                        rate,
                        count,
                        statistics.median(latencies),
                        percentile(latencies, 0.99),
                        max(latencies),
                    )
                )
                print(f"{rate}/s: p50 {rows[-1][2]:.1f} ms, p99 {rows[-1][3]:.1f} ms", flush=True)
        finally:
            platform.close()
    lines = ["| files/s | files | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    lines += [
        f"| {r} | {n} | {p50:.1f} | {p99:.1f} | {worst:.1f} |" for r, n, p50, p99, worst in rows
    ]
    at50 = [r for r in rows if r[0] == 50]
    verdict = "no run at 50 files/s"
    if at50:
        _, _, p50, p99, _ = at50[0]
        verdict = (
            f"at 50 files/s: p50 {p50:.1f} ms (target at most 5, "
            f"{'met' if p50 <= 5 else 'missed'}), p99 {p99:.1f} ms (target at most 50, "
            f"{'met' if p99 <= 50 else 'missed'})"
        )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "latency",
        f"""## Workload 2: from a file landing to its script starting

`.venv/bin/python bench/latency.py --rates {args.rates} --seconds {args.seconds:g}`: files
written into a service's input folder at a steady rate; the latency is from the moment
the file was closed to the script's first instruction (bash's `$EPOCHREALTIME`), through
inotify, the store (the event fsynced), the scheduler and the process runtime.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
