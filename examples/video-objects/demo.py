#!/usr/bin/env python3
"""ondrop's main demo (`make demo`): objects found in a video by a chain of three services.

Starts ondrop on a fresh data folder, applies video-objects.yaml, uploads a video (a
sample made here, offline, or yours), shows each stage's progress, prints where the
outputs are and the result, and stops the platform.

    demo.py [VIDEO] [--data FOLDER] [--fdl FILE] [--cluster]

With --cluster (`make demo-cluster`) it first starts a Ray cluster of two nodes on this
machine's loopback addresses: split and summary run on the faas pool here, each frame's
detect job on the batch pool on the cluster's nodes, the files in the bundled object
store that the nodes reach; the report says which node ran how many frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ondrop.cli.follow import follow as show
from ondrop.client import Client

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
console = Console()


def start(
    data: Path, flags: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Client]:
    """`ondrop up` on `data`, its log in data/platform.log; returns it and a client."""
    log = (data / "platform.log").open("wb")
    env = {**env, "ONDROP_DATA": str(data)}
    proc = subprocess.Popen([str(BIN / "ondrop"), "up", "--port", "0", *flags], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"ondrop up stopped:\n{(data / 'platform.log').read_text()}")
        try:
            url = json.loads((data / "endpoint.json").read_text())["url"]
            password = json.loads((data / "admin.json").read_text())["password"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
            continue
        client = Client(url, "admin", password)
        if client.health():
            return proc, client
    proc.kill()
    sys.exit("ondrop up did not start within a minute; see its log: " + str(data))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def follow(client: Client, video: str, started: list[str]) -> dict[str, list[dict[str, object]]]:
    """A bar per stage of the work the upload started, until its summary has ended (what
    `ondrop put --wait` shows); then the jobs by stage."""
    show(client, started, console, None)
    stem = Path(video).stem
    mine = {
        "split": lambda j: j["input"] == f"videos/in/{video}",
        "detect": lambda j: str(j["input"]).startswith(f"videos/frames/{stem}-t"),
        "summary": lambda j: j["input"] == f"videos/in/{video}",
    }
    return {name: [{"id": i, **j} for i, j in client.jobs(name).items() if keep(j)]
            for name, keep in mine.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", type=Path, help="a video (default: a sample)")
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / ".demo")
    parser.add_argument("--fdl", type=Path, default=HERE / "video-objects.yaml")
    parser.add_argument("--cluster", action="store_true", help="detect on a loopback Ray cluster")
    args = parser.parse_args()
    data = args.data.resolve()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    video = args.video
    if video is None:
        video = data / "sample.mp4"
        console.print("[bold]== making a sample video[/] (scikit-image's photographs, offline)")
        subprocess.run([sys.executable, str(HERE / "make_sample.py"), str(video)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    elif not video.is_file():
        sys.exit(f"no video at {video}")
    flags, env, cluster = [], dict(os.environ), None
    if args.cluster:
        cluster = start_cluster()
        flags = ["--faas-backend", "local", "--batch-backend", "ray"]
        flags += ["--ray-address", cluster.address, "--object-store", "seaweedfs"]
        env = ray_env()
    try:
        run(args, data, video, flags, env)
    finally:
        if cluster is not None:
            cluster.stop()


def start_cluster() -> Any:
    """A Ray head (no CPUs of its own) and two nodes of 2 CPUs, on 127.0.0.2-4."""
    sys.path.insert(0, str(HERE.parent.parent))  # the loopback cluster the tests use
    from tests.support.ray_cluster import RayCluster

    console.print("[bold]== starting a Ray cluster[/] (a head and two nodes, on loopback)")
    cluster = RayCluster()
    cluster.start(head_cpus=0)
    for _ in range(2):
        node = cluster.add_node(num_cpus=2)
        console.print(f"   node {node.ip} joined")
    return cluster


def ray_env() -> dict[str, str]:
    from tests.support.ray_cluster import ray_env

    return ray_env()


def run(args: argparse.Namespace, data: Path, video: Path, flags: list[str],
        env: dict[str, str]) -> None:  # fmt: skip
    proc, client = start(data, flags, env)
    try:
        console.print(f"[bold]== ondrop is up[/] at {client.url} (log: {data}/platform.log)")
        console.print(f"[bold]== applying[/] {args.fdl}")
        applied = subprocess.run([str(BIN / "ondrop"), "apply", str(args.fdl)],
                                 env={**os.environ, "ONDROP_DATA": str(data)})  # fmt: skip
        if applied.returncode != 0:
            sys.exit(f"{args.fdl} was not applied (the reason is above)")
        console.print(f"[bold]== uploading[/] {video.name} to videos/in")
        answer = client.upload("minio.default", f"videos/in/{video.name}", video)
        started = time.monotonic()
        jobs = follow(client, video.name, [j["job"] for j in answer["jobs"]])
        took = time.monotonic() - started
        for name, found in jobs.items():
            failed = [job for job in found if job["status"] == "Failed"]
            if failed:  # the first one's log; the others most often say the same
                job = failed[0]
                log = client.logs(name, str(job["id"])).strip().splitlines()[-15:]
                console.print(f"[red]{name} job for {job['input']} failed:[/] {job['reason']}")
                console.print("\n".join(f"    {line}" for line in log), highlight=False,
                              markup=False)  # fmt: skip
            if len(failed) > 1:
                console.print(f"   and {len(failed) - 1} more {name} job(s) failed; "
                              f"`ondrop logs {name} JOB` shows each one's log")  # fmt: skip
        if args.cluster:
            fetch(client, data, video.name, jobs)
    finally:
        stop(proc)
    report(data, video.name, jobs, took)


def fetch(client: Client, data: Path, video: str, jobs: dict[str, list[dict[str, object]]]) -> None:
    """The summary out of the object store, and where the frames were detected."""
    stem = Path(video).stem
    for name in (f"{stem}-summary.json", f"{stem}-contact.png", f"{stem}-timeline.png"):
        key = f"videos/summary/{name}"
        client.download("minio.default", key, data / "storage" / key)
    nodes: dict[str, int] = {}
    for job in jobs["detect"]:
        node = str(client.job("detect", str(job["id"])).get("node") or "?")
        nodes[node] = nodes.get(node, 0) + 1
    for node, count in sorted(nodes.items()):
        console.print(f"   detect ran {count} frame(s) on node {node}")


def report(data: Path, video: str, jobs: dict[str, list[dict[str, object]]], took: float) -> None:
    storage = data / "storage" / "videos"
    stem = Path(video).stem
    summary_file = storage / "summary" / f"{stem}-summary.json"
    if not summary_file.exists():
        sys.exit(f"no summary was made; the platform's log is {data}/platform.log")
    summary = json.loads(summary_file.read_text())
    if (storage / "frames").exists():
        console.print(f"[bold]== done in {took:.1f} s[/]; the outputs stay on disk:")
        console.print(f"   frames          {storage / 'frames'}")
        console.print(f"   detections      {storage / 'detections'}  (objects, labelled frames)")
    else:  # on the cluster: in the bundled object store, which stopped with ondrop
        console.print(f"[bold]== done in {took:.1f} s[/]; frames and detections stayed in the "
                      f"object store ({data / 'seaweedfs'}); the summary:")  # fmt: skip
    console.print(f"   summary         {summary_file}")
    console.print(f"   contact sheet   {storage / 'summary' / f'{stem}-contact.png'}")
    console.print(f"   timeline        {storage / 'summary' / f'{stem}-timeline.png'}")
    console.print(f"[bold green]{summary['result']}[/]")
    failed = sum(j["status"] == "Failed" for found in jobs.values() for j in found)
    if failed:
        sys.exit(f"{failed} job(s) failed (their logs are above): the result misses their part")


if __name__ == "__main__":
    main()
