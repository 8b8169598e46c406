"""The baseline of bench/cluster.py: plain Ray tasks on the same cluster, each running the
same script as ondrop's job with subprocess, from a driver in a process of its own.

    python bench/raw_ray.py ADDRESS

It warms the nodes' workers, prints `raw-ray: {"ready": true}`, then answers each JSON line on
stdin with one line on stdout, `raw-ray: ` and JSON:

  {"op": "tiny", "count": N}                    N copy tasks of 1 CPU: seconds, durations
  {"op": "sleep", "count": N, "cpu": 0.01, "script": S}  N tasks running S: seconds
  {"op": "gpu"}                                 one task of 1 GPU: seconds to its start
  {"op": "gpu_nodes"}                           how many live nodes have a GPU
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'  # bench/work.sh, ondrop's service script
REPLY = "raw-ray: "  # begins each answer: Ray prints lines of its own


def copy_job(i: int) -> float:
    """What a job of the copy service does, on local files: stage in, run, stage out;
    returns the seconds it took."""
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="raw-"))
    try:
        (work / "in").mkdir()
        (work / "out").mkdir()
        source = work / "in" / f"f{i:05}.txt"
        source.write_text(f"file {i}\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "INPUT_FILE_PATH": str(source),
            "TMP_OUTPUT_DIR": str(work / "out"),
        }
        subprocess.run(["/bin/sh", "-c", COPY], env=env, check=True)
        for output in (work / "out").iterdir():
            output.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.perf_counter() - started


def sleep_job(script: str) -> None:
    subprocess.run(["/bin/sh", "-c", script], check=True)


def gpu_job() -> float:
    return time.time()


def answer(request: dict[str, Any]) -> dict[str, Any]:
    import ray

    op = request["op"]
    started = time.perf_counter()
    if op == "tiny":
        task = ray.remote(copy_job).options(num_cpus=1)
        took = ray.get([task.remote(i) for i in range(int(request["count"]))], timeout=600)
        return {"seconds": time.perf_counter() - started, "durations": took}
    if op == "sleep":
        sleeper = ray.remote(sleep_job).options(num_cpus=float(request["cpu"]))
        count, script = int(request["count"]), str(request["script"])
        ray.get([sleeper.remote(script) for _ in range(count)], timeout=600)
        return {"seconds": time.perf_counter() - started}
    if op == "gpu_nodes":
        alive = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("GPU")]
        return {"alive": len(alive)}
    if op == "gpu":
        submitted = time.time()
        gpu = ray.remote(gpu_job).options(num_cpus=1, num_gpus=1)
        return {"seconds": ray.get(gpu.remote(), timeout=600) - submitted}
    raise ValueError(f"no such op {op!r}")


def main(address: str) -> None:
    import ray  # here: bench/cluster.py imports this module for REPLY alone

    ray.init(
        address=address,
        _node_ip_address="127.0.0.2",  # through the head's raylet, on loopback
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus:  # every node's workers started and warm before the clock starts
            warm = ray.remote(copy_job).options(num_cpus=1)
            ray.get([warm.remote(i) for i in range(2 * cpus)], timeout=300)
        print(REPLY + json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip():
                print(REPLY + json.dumps(answer(json.loads(line))), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
