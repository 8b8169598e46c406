"""Streaming a large file through stage-in and stage-out against the bundled object
store (SeaweedFS), next to boto3's own upload and download of the same file, in one run.

  boto3          upload_file / download_file with boto3's default transfer settings
  ondrop         S3Storage.put_file (stage-out) / S3Storage.get (stage-in), what the
                 supervisor calls for every job

Target (issue 4): ondrop at least 80% of boto3's MB/s, both ways.

    .venv/bin/python bench/storage_throughput.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3
from report import write_section

from ondrop.storage import build
from ondrop.storage.seaweedfs import SeaweedFS


def rate(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024**2
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        server = SeaweedFS(scratch / "seaweedfs")
        server.start("http://127.0.0.1:9/nowhere")
        try:
            config = server.provider_config()
            client = boto3.client(
                "s3",
                endpoint_url=config["endpoint"],
                aws_access_key_id=config["access_key"],
                aws_secret_access_key=config["secret_key"],
                region_name=config["region"],
            )
            client.create_bucket(Bucket="bench")
            store = build("minio.bench", config)
            source = scratch / "source.bin"
            block = os.urandom(1 << 20)
            with source.open("wb") as f:
                for i in range(args.size_mib):
                    f.write(block[i % 1024 :] + block[: i % 1024])
            results: dict[str, list[float]] = {
                k: [] for k in ("boto3 up", "ondrop up", "boto3 down", "ondrop down")
            }
            for run in range(args.runs):
                started = time.perf_counter()
                client.upload_file(str(source), "bench", f"boto3/{run}.bin")
                results["boto3 up"].append(rate(size, time.perf_counter() - started))
                started = time.perf_counter()
                store.put_file(f"bench/ondrop/{run}.bin", source)
                results["ondrop up"].append(rate(size, time.perf_counter() - started))
                dest = scratch / "dest.bin"
                started = time.perf_counter()
                client.download_file("bench", f"boto3/{run}.bin", str(dest))
                results["boto3 down"].append(rate(size, time.perf_counter() - started))
                dest.unlink()
                started = time.perf_counter()
                store.get(f"bench/ondrop/{run}.bin", dest)
                results["ondrop down"].append(rate(size, time.perf_counter() - started))
                dest.unlink()
                client.delete_object(Bucket="bench", Key=f"boto3/{run}.bin")
                store.delete(f"bench/ondrop/{run}.bin")
            store.close()
        finally:
            server.stop()
    median = {k: statistics.median(v) for k, v in results.items()}
    lines = ["| transfer | median MB/s | min | max | vs boto3 |", "|---|---|---|---|---|"]
    verdicts = []
    for way, label in (("up", "upload (stage-out)"), ("down", "download (stage-in)")):
        base = median[f"boto3 {way}"]
        for who in ("boto3", "ondrop"):
            values = results[f"{who} {way}"]
            lines.append(
                f"| {who} {label} | {median[f'{who} {way}']:.0f} | {min(values):.0f} "
                f"| {max(values):.0f} | {median[f'{who} {way}'] / base:.2f} |"
            )
        ratio = median[f"ondrop {way}"] / base
        verdicts.append(
            f"{label}: {ratio:.0%} of boto3 (target at least 80%, "
            f"{'met' if ratio >= 0.8 else 'missed'})"
        )
    table = "\n".join(lines)
    print(table)
    print("; ".join(verdicts))
    write_section(
        "storage-throughput",
        f"""## Streaming through the bundled object store

`.venv/bin/python bench/storage_throughput.py --size-mib {args.size_mib} --runs {args.runs}`:
a {args.size_mib} MiB file to and from SeaweedFS (`weed mini` on loopback), medians of
{args.runs} runs, boto3's own transfers as the baseline in the same run.

{table}

{"; ".join(verdicts)}.""",
    )


if __name__ == "__main__":
    main()
