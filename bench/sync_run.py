"""Workload 3, synchronous invocation: round trips of `POST /run` to a trivial service
(its script is `true`), one after the other over a kept-alive connection, next to
`GET /health` on the same platform (the HTTP floor).

Targets (issue 7): p50 at most 10 ms, p99 at most 30 ms.

    .venv/bin/python bench/sync_run.py [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import Ondrop
from latency import percentile
from report import write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Ondrop(Path(tmp))
        try:
            platform.client.apply([{"name": "noop", "script": "true"}])
            samples: dict[str, list[float]] = {"GET /health": [], "POST /run/noop": []}
            for _ in range(10):
                platform.client.run("noop", b"")
            for _ in range(args.calls):
                started = time.perf_counter()
                platform.client.health()
                samples["GET /health"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                platform.client.run("noop", b"")
                samples["POST /run/noop"].append((time.perf_counter() - started) * 1000)
        finally:
            platform.close()
    lines = ["| request | p50 ms | p99 ms | max ms | calls |", "|---|---|---|---|---|"]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | "
            f"{percentile(values, 0.99):.1f} | {max(values):.1f} | {len(values)} |"
        )
    run = samples["POST /run/noop"]
    p50, p99 = statistics.median(run), percentile(run, 0.99)
    verdict = (
        f"/run p50 {p50:.1f} ms (target at most 10, {'met' if p50 <= 10 else 'missed'}), "
        f"p99 {p99:.1f} ms (target at most 30, {'met' if p99 <= 30 else 'missed'})"
    )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "sync-run",
        f"""## Workload 3: synchronous `/run`

`.venv/bin/python bench/sync_run.py --calls {args.calls}`: a service whose script is `true`,
invoked with `ondrop.Client.run` (HTTP on loopback, kept alive) one call after another;
each call records an event and a job, stages the body in, runs the script in a fresh
process and answers with its output.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
