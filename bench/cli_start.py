"""Workload 10, the command's start: how long `ondrop --help`, `ondrop --version` and
`ondrop services` (against a running platform) take from exec to exit, the median of
RUNS (10) each, against the bare interpreter (`python -c pass`) in the same run.

Target (issue 18): each command in at most 250 ms.

    .venv/bin/python bench/cli_start.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import BIN, Ondrop
from report import summary, write_section

TARGET_MS = 250.0
BASELINE = "python -c pass"


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    ondrop = str(BIN / "ondrop")
    with tempfile.TemporaryDirectory() as tmp:
        platform = Ondrop(Path(tmp))
        env = {**os.environ, "ONDROP_DATA": str(platform.data)}
        commands = {
            BASELINE: [sys.executable, "-c", "pass"],
            "ondrop --help": [ondrop, "--help"],
            "ondrop --version": [ondrop, "--version"],
            "ondrop services": [ondrop, "services"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        try:
            for _ in range(args.runs):
                for name, argv in commands.items():  # in turns: drift hits all alike
                    samples[name].append(timed(argv, env))
        finally:
            platform.close()
    floor = summary(samples[BASELINE])[0]
    lines = [
        "| command | median ms | min | max | vs the interpreter | target |",
        "|---|---|---|---|---|---|",
    ]
    missed = []
    for name, values in samples.items():
        median, low, high = summary(values)
        target = "-" if name == BASELINE else ("met" if median <= TARGET_MS else "missed")
        if target == "missed":
            missed.append(name)
        lines.append(
            f"| `{name}` | {median:.0f} | {low:.0f} | {high:.0f} | {median / floor:.1f}x | "
            f"{target} |"
        )
    table = "\n".join(lines)
    verdict = (
        f"every command within {TARGET_MS:.0f} ms"
        if not missed
        else f"over {TARGET_MS:.0f} ms: {', '.join(missed)}"
    )
    print(table)
    print(verdict)
    command = f".venv/bin/python bench/cli_start.py --runs {args.runs}"
    write_section(
        "cli_start",
        f"""## Workload 10: the command's start

`{command}`: each command run {args.runs} times in turns, timed from exec to exit;
`ondrop services` asks a platform started for the run (on the embedded default). The
interpreter's own start is the floor no command can go under.

{table}

{verdict} (target at most {TARGET_MS:.0f} ms). A command imports only what it uses:
the HTTP client for the commands that talk to the platform, the FDL models for
`apply`, the container engine for `image`; `--help` pays for typer's help formatting.
""",
    )


if __name__ == "__main__":
    main()
