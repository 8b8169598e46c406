"""A smoke run of every workload in bench/ at tiny sizes, so the harness cannot rot: each
script must finish, print its table and verdict, and write its section of the report
(to a temporary file here, never docs/benchmarks.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.servers import unavailable

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(tmp_path: Path, script: str, *args: str) -> tuple[str, str]:
    """Run bench/<script> with `args`; returns (its output, the report it wrote)."""
    report = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env={
            **os.environ,
            "BENCH_DOCS": str(report),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, report.read_text()


def test_tiny_jobs_compares_all_five_systems_with_the_floor(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (make bench installs it)")
    out, report = run_bench(tmp_path, "tiny_jobs.py", "--files", "6", "--repeat", "1")
    for system in ("floor", "celery", "huey", "ondrop (drop)", "ondrop (API upload)"):
        assert f"| {system} |" in out
    assert "| floor | " in report and "| 1.00 |" in report
    assert "ondrop (drop) / floor:" in out
    assert "<!-- tiny-jobs -->" in report and "--files 6 --repeat 1" in report


def test_latency_measures_every_rate(tmp_path: Path) -> None:
    out, report = run_bench(
        tmp_path, "latency.py", "--rates", "10,50", "--seconds", "0.4", "--repeat", "2",
        "--floor-runs", "3",
    )  # fmt: skip
    assert "| 10 | 8 |" in out and "| 50 | 40 |" in out
    assert "| floor: the script started directly | 3 |" in out
    assert "at 50 files/s: p50" in report and "own share of the p50" in report


def test_sync_run_times_health_and_run(tmp_path: Path) -> None:
    out, report = run_bench(tmp_path, "sync_run.py", "--calls", "5")
    assert "| GET /health |" in out and "| POST /run/noop |" in out
    assert "/run p50" in report


def test_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out, report = run_bench(tmp_path, "burst.py", "--files", "30", "--reference", "10")
    assert "| lost, duplicated, failed | 0, 0, 0 |" in out
    assert "peak RSS" in report


def test_idle_reports_memory_and_cpu(tmp_path: Path) -> None:
    out, report = run_bench(tmp_path, "idle.py", "--seconds", "1")
    assert "RSS " in out and "% of a core" in out
    assert "<!-- idle -->" in report


def test_store_compares_claims_with_a_bare_loop_and_one_control_plane_with_two(
    tmp_path: Path,
) -> None:
    from tests.support.servers import postgres_bin

    if postgres_bin() is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    out, report = run_bench(
        tmp_path, "store.py", "--jobs", "40", "--rounds", "1", "--batches", "1,5", "--files", "20"
    )
    for system in ("bare SKIP LOCKED loop", "ondrop's store (claim)"):
        assert f"| {system} | 1 |" in out and f"| {system} | 5 |" in out
    assert "ondrop / bare loop, 5 per claim:" in out
    assert "| 1 |" in out and "| 2 |" in out and "two control planes / one:" in out
    assert "<!-- store -->" in report
    assert "--jobs 40 --rounds 1 --batches 1,5 --files 20" in report


def test_cli_start_times_each_command_against_the_interpreter(tmp_path: Path) -> None:
    out, report = run_bench(tmp_path, "cli_start.py", "--runs", "1")
    for command in ("`python -c pass`", "`ondrop --help`", "`ondrop --version`"):
        assert command in out
    assert "`ondrop services`" in out and "250 ms" in out
    assert "<!-- cli_start -->" in report


def test_detect_compares_ondrop_with_the_bare_detector(tmp_path: Path) -> None:
    out, report = run_bench(tmp_path, "detect.py", "--seconds", "1", "--repeat", "1")
    assert "| bare: the detector loaded once, every frame in a loop |" in out
    assert "| ondrop: the chain end to end (upload to the summary stored) |" in out
    assert "<!-- detect -->" in report and "--seconds 1 --repeat 1" in report
    assert "10x" in report  # the GPU claim: checked, or said to be unchecked
