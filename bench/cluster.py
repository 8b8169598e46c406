"""Workload 8, ondrop on a Ray cluster: a loopback cluster (a head of 0 CPUs and NODES (3)
worker nodes of 4 CPUs) with `ondrop up --backend ray --object-store seaweedfs` on it,
against plain Ray tasks (bench/raw_ray.py) running the same scripts with subprocess on the
same cluster, in the same run, in turns:

 1. tiny jobs: JOBS (200) copies through the faas pool and through the batch pool
    (uploaded through the API; from the first upload to the last job finished) against as
    many Ray tasks of 1 CPU, ROUNDS (3) rounds;
 2. SLEEPERS (1,000) jobs of `sleep 2` with `cpu: 0.01` and `memory: 16Mi` on the batch
    pool, uploaded in one request, and
    RAW_SLEEPERS (50) such Ray tasks (each holds a Ray worker process of ~100 MB: 1,000
    do not fit here): how many run at once, the time until all are done, and the worker
    nodes' memory per running job, SLEEPER_ROUNDS (3) rounds;
 3. a GPU job while Ray's autoscaler (fake_multinode: a head only, a GPU worker type of
    min_workers 0) adds the node it needs: the time until its script starts, GPU_ROUNDS
    (2) rounds.

Targets (the Ray backend's issue): tiny jobs at least 0.5 of raw Ray's jobs/s; 1,000
sleepers all running at once, done within 2x of raw Ray's time, under 5 MB of node
memory per running job.

    .venv/bin/python bench/cluster.py [--jobs 200] [--rounds 3] [--sleepers 1000]
        [--raw-sleepers 50] [--sleeper-rounds 3] [--gpu-rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cluster_systems import (
    STORE,
    OnCluster,
    RawRay,
    cpu_seconds,
    make_files,
    service,
    through_ondrop,
    upload,
    wait_done,
)
from harness import BENCH, BIN, WORKERS
from node_sampler import Sample, Sampler, settled
from report import write_section
from work import SCRIPT

sys.path.insert(0, str(BENCH.parent))  # tests.support: the loopback cluster of the tests
from tests.support.autoscaler import WorkerType, start_autoscaling
from tests.support.ray_cluster import RayCluster

NODES, NODE_CPUS = 3, 4  # Ray trusts the count: 1,000 jobs of 0.01 CPU need 10 at once
MODES = ("faas", "batch")
RAW, BATCH = "raw Ray tasks", "ondrop batch"
WORKER_NAMES = (b"ray::sleep_job",)  # a Ray worker running a baseline job, as ps says
GPU_NODE = WorkerType("gpu", cpus=2, gpus=1, min_workers=0, max_workers=1)
# Two drivers share the cluster here (ondrop's and the baseline's), each with workers of its
# own: with Ray's default soft limit (a node's CPUs) each would end the other's idle
# workers, and each round would pay for starting them again.
SYSTEM_CONFIG = {"num_workers_soft_limit": 4 * NODE_CPUS}
# A sleeper notes when it slept (its own clock) in a file of its own, where ondrop's job
# users may write too: how many ran at once, whatever a sampler saw.
SLEEPER = 't=$(date +%s.%N); sleep 2; echo "$t $(date +%s.%N)" > "$(mktemp -p {spans})"'
# Sleepers are uploaded in one request (a tar: what `ondrop put` sends for many small
# files), so that the API's pace, not the platform's, does not decide how many run at once.
SLEEPER_MEMORY = "16Mi"
STARTED = 'date +%s.%N > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'


# -- the workloads ---------------------------------------------------------------------
def tiny(
    raw: RawRay,
    on: OnCluster,
    files: list[Path],
    rounds: int,
    durations: dict[str, list[float]],
    reported: dict[str, int],
) -> dict[str, list[float]]:
    """jobs/s of each system, round by round; each job's seconds added to `durations`, and
    the most jobs of each pool that ondrop said were running at once to `reported`."""
    client = on.client
    script = SCRIPT.read_text()
    services = [service(f"{m}-{r}", m, script) for r in range(rounds) for m in MODES]
    client.apply([service(f"warm-{m}", m, script) for m in MODES] + services)
    warm = files[: 2 * NODES * NODE_CPUS]  # the nodes' supervisors and task workers warm
    for mode in MODES:
        through_ondrop(client, f"warm-{mode}", warm)
    running: dict[str, int] = {}
    rates: dict[str, list[float]] = {RAW: [], **{f"ondrop {m}": [] for m in MODES}}
    uploads: list[float] = []
    count = len(files)
    for r in range(rounds):
        answer = raw.ask(op="tiny", count=count)
        rates[RAW].append(count / answer["seconds"])
        durations[RAW] += answer["durations"]
        taken = []
        for mode in MODES:
            uploaded, took, most = through_ondrop(client, f"{mode}-{r}", files)
            rates[f"ondrop {mode}"].append(count / took)
            running[mode] = max(running.get(mode, 0), most)
            taken.append(count / uploaded)
            jobs = client.jobs(f"{mode}-{r}").values()
            durations[f"ondrop {mode}"] += [j["duration"] for j in jobs if j.get("duration")]
        uploads.append(statistics.mean(taken))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()))
    rates["API uploads alone"] = uploads
    reported.update(running)
    return rates


@contextlib.contextmanager
def sampled(cluster: RayCluster) -> Iterator[tuple[Sample, Sampler]]:
    """The worker nodes once idle (settled), then sampled while the body runs."""
    sessions = [n.session for n in cluster.nodes if not n.head]
    idle = settled(lambda: sessions)
    with Sampler(lambda: sessions, every=0.5, workers=WORKER_NAMES) as sampler:
        yield idle, sampler


def spans_of(folder: Path) -> list[tuple[float, float]]:
    """The sleeps noted in `folder` (and removed there): (start, end) on the jobs' clock."""
    spans = []
    for path in folder.iterdir():
        start, end = path.read_text().split()
        spans.append((float(start), float(end)))
        path.unlink()
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def per_job(
    idle: Sample, samples: list[Sample], spans: list[tuple[float, float]]
) -> dict[str, float]:
    """The most jobs that ran at once, and at the sample with the most running, the
    memory per running job."""

    def running(at: float) -> int:
        return sum(start <= at <= end for start, end in spans)

    peak = max(samples, key=lambda s: (running(s.at), s.at))
    jobs, workers = max(running(peak.at), 1), max(peak.workers, 1)
    return {
        "running": most_at_once(spans),
        "sampled": running(peak.at),
        "rss": (peak.rss - idle.rss) / jobs,
        "pss": (peak.pss - idle.pss) / jobs,
        "idle_rss": idle.rss,
        "idle_pss": idle.pss,
        "processes": (peak.processes - idle.processes) / jobs,
        "worker_rss": peak.worker_rss / workers,
        "worker_pss": peak.worker_pss / workers,
    }


def sleepers(
    cluster: RayCluster, scratch: Path, files: list[Path], raw_count: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Each figure the median of `rounds`, each round with drivers of its own, so that
    what one round left (idle workers, supervisors) is not the next one's idle."""
    spans = Path(tempfile.mkdtemp(prefix="bench-spans-"))
    spans.chmod(0o1777)  # ondrop's jobs run as users of their own
    try:
        runs = []
        for r in range(rounds):
            with (
                RawRay(cluster.address) as raw,
                OnCluster(scratch / f"sleepers-{r}", cluster.address) as on,
            ):
                name = f"sleepers-{r}"
                runs.append(sleepers_once(raw, on, cluster, files, raw_count, name, spans))
    finally:
        shutil.rmtree(spans, ignore_errors=True)
    return {
        system: {
            key: statistics.median(run[system][key] for run in runs) for key in runs[0][system]
        }
        for system in (RAW, BATCH)
    }


def sleepers_once(
    raw: RawRay,
    on: OnCluster,
    cluster: RayCluster,
    files: list[Path],
    raw_count: int,
    name: str,
    spans: Path,
) -> dict[str, dict[str, float]]:
    script = SLEEPER.format(spans=spans)
    # as small as a sleep is: the 256 MiB a job that names no memory is counted as would let
    # only about 60 of them at a time onto a node here (Ray reckons with what they ask for)
    on.client.apply([service(name, "batch", script, cpu="0.01", memory=SLEEPER_MEMORY)])
    found = {}
    with sampled(cluster) as (idle, sampler):
        cpu = cpu_seconds(raw.proc.pid)
        seconds = raw.ask(op="sleep", count=raw_count, cpu=0.01, script=script)["seconds"]
        cpu = cpu_seconds(raw.proc.pid) - cpu
    found[RAW] = {
        "seconds": seconds,
        "uploaded": 0.0,
        "cpu": cpu,
        **per_job(idle, sampler.samples, spans_of(spans)),
    }
    with sampled(cluster) as (idle, sampler):
        cpu = cpu_seconds(on.proc.pid)
        uploaded, seconds, _ = through_ondrop(on.client, name, files, together=True)
        cpu = cpu_seconds(on.proc.pid) - cpu
    found[BATCH] = {
        "seconds": seconds,
        "uploaded": uploaded,
        "cpu": cpu,
        **per_job(idle, sampler.samples, spans_of(spans)),
    }
    print(
        f"{name}: "
        + ", ".join(
            f"{k} {v['seconds']:.1f} s, {v['running']:.0f} at once" for k, v in found.items()
        ),
        flush=True,
    )
    return found


def gpu_start(scratch: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds from a GPU job's submission to its start while the autoscaler adds the GPU
    node, raw Ray's and ondrop's in turns, no GPU node left before each."""
    waits: dict[str, list[float]] = {RAW: [], BATCH: []}
    with RayCluster() as cluster:
        start_autoscaling(cluster, [GPU_NODE], idle_timeout_minutes=0.1)
        with RawRay(cluster.address) as raw, OnCluster(scratch / "gpu", cluster.address) as on:
            on.client.apply([service("gpu", "batch", STARTED, gpu=1)])
            for r in range(rounds):
                no_gpu_node(raw)
                waits[RAW].append(raw.ask(op="gpu")["seconds"])
                no_gpu_node(raw)
                (path,) = make_files(scratch / f"gpu-{r}", 1, f"g{r}-")
                submitted = time.time()
                upload(on.client, "gpu", [path])
                wait_done(on.client, "gpu", r + 1)
                got = scratch / f"gpu-{r}" / "started"
                on.client.download(STORE, f"bench/gpu-out/{path.name}", got)
                waits[BATCH].append(float(got.read_text()) - submitted)
                print(f"GPU {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in waits.items()))
    return waits


def no_gpu_node(raw: RawRay, timeout: float = 300.0) -> None:
    """Returns once the autoscaler has removed the GPU node (idle for 6 s)."""
    deadline = time.monotonic() + timeout
    while raw.ask(op="gpu_nodes")["alive"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the GPU node is still there after {timeout:g} s")
        time.sleep(1.0)


# -- the report -------------------------------------------------------------------------
def tiny_table(rates: dict[str, list[float]], jobs: int) -> tuple[str, str]:
    raw = rates[RAW]
    lines = [
        f"| {jobs} tiny jobs | jobs/s (median) | min | max | vs raw Ray (median of rounds) |",
        "|---|---|---|---|---|",
    ]
    ratio = {}
    for name, values in rates.items():
        ratio[name] = statistics.median(x / r for x, r in zip(values, raw, strict=True))
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | "
            f"{max(values):.1f} | {ratio[name]:.2f} |"
        )
    verdict = "; ".join(
        f"ondrop {m} / raw Ray: {ratio[f'ondrop {m}']:.2f} (target at least 0.5, "
        f"{'met' if ratio[f'ondrop {m}'] >= 0.5 else 'missed'})"
        for m in MODES
    )
    return "\n".join(lines), verdict


def sleepers_table(
    found: dict[str, dict[str, float]], count: int, raw_count: int
) -> tuple[str, str]:
    raw, on = found[RAW], found[BATCH]
    mb = 1e6

    def row(what: str, key: str, scale: float = 1.0, fmt: str = ".1f") -> str:
        return f"| {what} | {raw[key] / scale:{fmt}} | {on[key] / scale:{fmt}} |"

    lines = [
        f"| jobs of `sleep 2`, `cpu: 0.01`, `memory: {SLEEPER_MEMORY}` (medians of rounds) | "
        f"{RAW}, {raw_count} | {BATCH}, {count} |",
        "|---|---|---|",
        row("most running at once (from the sleeps' own clocks)", "running", fmt=".0f"),
        row("seconds to all done (ondrop: from the first upload)", "seconds"),
        row("of which uploading through the API", "uploaded"),
        row("CPU seconds of the driver (ondrop: `ondrop up`)", "cpu"),
        row("the worker nodes idle: RSS MB", "idle_rss", mb, ".0f"),
        row("the worker nodes idle: PSS MB", "idle_pss", mb, ".0f"),
        row("node memory per running job (all but idle / running): RSS MB", "rss", mb),
        row("the same, PSS MB", "pss", mb),
        row("running at the memory sample (the one with the most)", "sampled", fmt=".0f"),
        row("processes more than idle, per running job", "processes"),
    ]
    over_raw = on["seconds"] / raw["seconds"]
    after_uploads = on["seconds"] - on["uploaded"]
    per_job = on["rss"] / mb
    verdict = (
        f"all running at once: raw Ray {'yes' if raw['running'] >= raw_count else 'no'} "
        f"({raw['running']:.0f} of {raw_count}), ondrop "
        f"{'yes' if on['running'] >= count else 'no'} ({on['running']:.0f} of {count}); "
        f"time to all done: ondrop's {count} {on['seconds']:.1f} s ({after_uploads:.1f} s "
        f"after the last upload), raw Ray's {raw_count} {raw['seconds']:.1f} s, "
        f"{over_raw:.1f}x raw Ray's time for {count / raw_count:.0f}x the jobs (target within "
        f"2x for the same count: raw Ray cannot run {count} here); node memory per running "
        f"job {per_job:.1f} MB RSS, {on['pss'] / mb:.1f} MB PSS (target under 5 MB: by "
        f"RSS {'met' if per_job < 5 else 'missed'}, by PSS "
        f"{'met' if on['pss'] / mb < 5 else 'missed'}; RSS counts the libraries every "
        "process maps once per process, PSS shares them out); one raw Ray job's worker and what it "
        f"started: {raw['worker_rss'] / mb:.0f} MB RSS, {raw['worker_pss'] / mb:.0f} MB PSS"
    )
    return "\n".join(lines), verdict


def gpu_table(waits: dict[str, list[float]]) -> tuple[str, str]:
    lines = [
        "| a GPU job, no GPU node yet | seconds to its start (median) | min | max | runs |",
        "|---|---|---|---|---|",
    ]
    for name, values in waits.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | "
            f"{max(values):.1f} | {len(values)} |"
        )
    over = statistics.median(waits[BATCH]) / statistics.median(waits[RAW])
    return "\n".join(lines), f"ondrop / raw Ray: {over:.2f}x (no target set)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleepers", type=int, default=1000)
    parser.add_argument("--raw-sleepers", type=int, default=50)
    parser.add_argument("--sleeper-rounds", type=int, default=3)
    parser.add_argument("--gpu-rounds", type=int, default=2)
    args = parser.parse_args()
    # the nodes' workers as `ondrop up --container-engine none`: the process runtime only
    os.environ["ONDROP_CONTAINER_ENGINE"] = "none"
    began, load_before = time.monotonic(), os.getloadavg()[0]
    durations: dict[str, list[float]] = {RAW: [], **{f"ondrop {m}": [] for m in MODES}}
    reported: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        scratch = Path(os.environ.get("BENCH_SCRATCH") or tmp)  # kept when given, to look at
        files = make_files(scratch / "tiny", args.jobs, "f")
        sleeper_files = make_files(scratch / "sleep", args.sleepers, "s")
        with RayCluster(system_config=SYSTEM_CONFIG) as cluster:
            cluster.start(head_cpus=0)
            for _ in range(NODES):
                cluster.add_node(num_cpus=NODE_CPUS)
            with RawRay(cluster.address) as raw, OnCluster(scratch / "on", cluster.address) as on:
                rates = tiny(raw, on, files, args.rounds, durations, reported)
            sleep = sleepers(
                cluster, scratch, sleeper_files, args.raw_sleepers, args.sleeper_rounds
            )
        gpu = gpu_start(scratch, args.gpu_rounds) if args.gpu_rounds else {}
    minutes, load_after = (time.monotonic() - began) / 60, os.getloadavg()[0]
    tiny_text, tiny_verdict = tiny_table(rates, args.jobs)
    took = ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms" for k, v in durations.items())
    sleep_text, sleep_verdict = sleepers_table(sleep, args.sleepers, args.raw_sleepers)
    if gpu:
        gpu_text, gpu_verdict = gpu_table(gpu)
        gpu_part = f"{gpu_text}\n\n{gpu_verdict}."
    else:
        gpu_part = "Not measured in this run (`--gpu-rounds 0`)."
    for text in (tiny_text, tiny_verdict, f"one job: {took}", sleep_text, sleep_verdict, gpu_part):
        print(text)
    command = (
        f".venv/bin/python bench/cluster.py --jobs {args.jobs} --rounds {args.rounds} "
        f"--sleepers {args.sleepers} --raw-sleepers {args.raw_sleepers} "
        f"--sleeper-rounds {args.sleeper_rounds} "
        f"--gpu-rounds {args.gpu_rounds}"
    )
    write_section(
        "cluster",
        f"""## Workload 8: ondrop on a Ray cluster

`{command}`, {minutes:.0f} minutes in all. A loopback Ray {ray_version()} cluster on this
one machine (tests/support/ray_cluster.py): a head of 0 CPUs and {NODES} worker nodes of
{NODE_CPUS} CPUs. On it `ondrop up --backend ray --object-store seaweedfs` (the services
read and write the bundled SeaweedFS as `{STORE}`; files uploaded through the API,
{WORKERS} at a time, the sleepers all in one request (a tar, as `ondrop put` sends
many small files); the nodes run scripts with ondrop's
process runtime, each job as a user of its own since it runs as root), and as the
baseline plain Ray tasks from a driver of their own (bench/raw_ray.py) running the same
script with subprocess on local files, in
the same run, in turns. Both drivers keep warm workers (`num_workers_soft_limit`
{SYSTEM_CONFIG["num_workers_soft_limit"]}). The machine was shared: load average
{load_before:.1f} at the start, {load_after:.1f} at the end (other engineers' tests, Ray
clusters among them), so only the ratios of one run mean much.

### Tiny jobs: copy the input to the output

{tiny_text}

{tiny_verdict}. At most {reported.get("batch", 0)} batch jobs and {reported.get("faas", 0)}
faas jobs were said to be running at once (`/system/status`), on {NODES * NODE_CPUS} CPUs:
the batch pool hands every job it claims to Ray at once, and a job waiting in Ray's queue
for a CPU counts as running from its claim. "API uploads alone" is the rate at which the
API took the files (the first upload to the last answer), a ceiling for ondrop's figures
here. One job's time, median:
{took} (ondrop's from its claim to its recorded end: Ray's hand-over, stage in and out
through S3 and the ledger included; raw Ray's inside the task). A node's supervisor runs
many jobs at once, so they overlap, and a batch job's time includes its wait for Ray to
reserve its CPU: a duration here is not a job's cost.

### Many small sleepers on the batch pool

ondrop runs {args.sleepers}, raw Ray {args.raw_sleepers}: every running raw Ray task holds
a Ray worker process of its own, so 1,000 at once do not fit this machine's 24 GiB, and
Ray starts a node's workers {NODE_CPUS} at a time (its `maximum_startup_concurrency`), each
a Python start on these 2 cores. An ondrop batch job holds a reservation (a placement
group) and runs on its node's supervisor, which is already there.

{sleep_text}

{sleep_verdict}. Each round has drivers of its own (a fresh `ondrop up` and raw Ray
driver), so that what a round left is not the next round's "idle". Memory: every process
of the worker nodes and their descendants (/proc: VmRSS, and PSS from smaps_rollup, which
splits shared pages among the processes mapping them) at the sample with the most jobs
running, less the same nodes idle just before, divided by the jobs running then (so the
workers Ray is still starting for the jobs not yet running count too); and, apart, raw
Ray's workers running a job (`ray::sleep_job`) with what they started.

### A GPU job while the autoscaler adds the node

Ray's fake_multinode autoscaler (tests/support/autoscaler.py) on a second cluster: a head
of 0 CPUs and a worker type of 2 CPUs and 1 GPU, `min_workers` 0, idle nodes removed after
6 s, none left before each run. Raw Ray's figure is from `.remote()` to the task's start,
ondrop's from the upload of the file to its script's start on the new node.

{gpu_part}""",
    )


def ray_version() -> str:
    done = subprocess.run(
        [str(BIN / "ray"), "--version"], capture_output=True, text=True, timeout=60
    )
    return done.stdout.split()[-1] if done.stdout.strip() else "(unknown)"


if __name__ == "__main__":
    main()
