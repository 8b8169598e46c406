"""Issue 15, from a file created in a Onedata space to its script starting: through the
space's changes stream (files renamed into place, and files written where they lie),
against OneTrigger's design (a listing of the space every 10 s) on the same Oneprovider
test server (tests/support/oneprovider.py), in the same run. FILES (50) files a run at
RATE (10) files a second, REPEAT (3) runs each; the listing is ondrop's own, with a token
that may not read the changes stream and ONDROP_POLL_INTERVAL=10.

Target (issue 15): through the changes stream, p50 under 100 ms.

    .venv/bin/python bench/onedata.py [--files 50] [--rate 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Ondrop
from latency import SCRIPT, paced, percentile
from report import write_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from tests.support.oneprovider import Oneprovider

TOKEN, LISTER = "bench-token", "bench-lister"
MODES = {
    "changes stream, renamed into place": (TOKEN, True),
    "changes stream, written where it lies": (TOKEN, False),
    "OneTrigger's design: a listing every 10 s": (LISTER, True),
}


def one_run(server: Oneprovider, scratch: Path, mode: str, files: int, rate: float) -> list[float]:
    """Milliseconds from each file's creation in the space to its script's start."""
    token, renamed = MODES[mode]
    os.environ["ONDROP_POLL_INTERVAL"] = "10"
    platform = Ondrop(scratch)
    try:
        provider = {"oneprovider_host": server.url, "token": token, "space": "bench"}
        platform.client.apply(
            [
                {
                    "name": "started",
                    "script": SCRIPT,
                    "input": [{"storage_provider": "onedata.bench", "path": "in"}],
                    "output": [{"storage_provider": "onedata.bench", "path": "out"}],
                    "storage_providers": {"onedata": {"bench": provider}},
                }
            ]
        )
        time.sleep(1.0)  # the stream open, the first listing done
        created: dict[str, float] = {}
        for i in paced(files, rate):
            name = f"f{i:04}-{scratch.name}.txt"
            if renamed:
                server.write("bench", f"in/.{name}", str(i).encode())
                server.rename("bench", f"in/.{name}", f"in/{name}")
            else:
                server.write("bench", f"in/{name}", str(i).encode())
            created[name] = time.time()
        deadline = time.monotonic() + 120
        found: dict[str, float] = {}
        while len(found) < files:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: {files - len(found)} file(s) never started")
            for name in created.keys() - found.keys():
                if (data := server.read("bench", f"out/{name}")) is not None:
                    found[name] = float(data)
            time.sleep(0.05)
        return [(found[n] - t) * 1000 for n, t in created.items()]
    finally:
        platform.close()
        del os.environ["ONDROP_POLL_INTERVAL"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    latencies: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp, Oneprovider() as server:
        server.add_space("bench")
        server.add_token(TOKEN)
        server.add_token(LISTER, changes=False)
        for run in range(args.repeat):
            for mode in MODES:  # in turns: the machine's drift falls on every mode alike
                scratch = Path(tmp) / f"run{run}-{len(latencies[mode])}-{abs(hash(mode))}"
                found = one_run(server, scratch, mode, args.files, args.rate)
                latencies[mode].append(found)
                print(f"run {run + 1}, {mode}: p50 {statistics.median(found):.1f} ms", flush=True)
    lines = [
        "| event source | files | p50 ms (median of runs) | p50 min | p50 max | p99 ms "
        "| vs listing (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    p50 = {
        m: statistics.median(statistics.median(r) for r in runs) for m, runs in latencies.items()
    }
    listing = p50["OneTrigger's design: a listing every 10 s"]
    for mode, runs in latencies.items():
        each = [statistics.median(r) for r in runs]
        p99 = statistics.median(percentile(r, 0.99) for r in runs)
        lines.append(
            f"| {mode} | {sum(map(len, runs))} | {p50[mode]:.1f} | {min(each):.1f} | "
            f"{max(each):.1f} | {p99:.1f} | {p50[mode] / listing:.3f} |"
        )
    stream = p50["changes stream, renamed into place"]
    verdict = (
        f"through the changes stream, p50 {stream:.1f} ms (target under 100, "
        f"{'met' if stream < 100 else 'missed'}), {listing / stream:.0f}x sooner than a "
        "listing every 10 s"
    )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "onedata",
        f"""## Onedata: from a file created in a space to its script starting

`.venv/bin/python bench/onedata.py --files {args.files} --rate {args.rate:g} --repeat
{args.repeat}`: {args.files} files a run created in a space of the Oneprovider test server
(tests/support/oneprovider.py, in the benchmark's process) at {args.rate:g} a second, the
modes in turns, {args.repeat} runs each; the latency is from the file's creation to the
script's first instruction (bash's `$EPOCHREALTIME`), through the event source, the store,
the scheduler, the stage-in from the space and the process runtime. A file renamed into
place is complete when it appears; one written where it lies is offered once it has been
quiet for a second (so that a writer's pieces make one job). OneTrigger's design is
ondrop's own listing, every 10 s, with a token that may not read the changes stream.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
