"""Cold start of a containerised job, three ways, in one run on one machine:

  bare crun      `crun run` of the bundle ondrop writes for such a job (the floor)
  podman run     `podman run --rm IMAGE true`, what a container per file costs naively
  ondrop /run    a job through the whole platform: HTTP in, event and job recorded,
                 stage in, a fresh container running `true`, stage out, HTTP out
  ... warm       the same with `warm: 60`: `true` exec'd in a kept container

Targets (issue 3): ondrop's p50 within 3x of bare crun's, and at least 5x faster than
podman run. Run as root with podman installed:

    .venv/bin/python bench/cold_start.py [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import summary, write_section

from ondrop.client import Client
from ondrop.runtime.cgroups import JobCgroup
from ondrop.runtime.engine import detect
from ondrop.runtime.images import Images
from ondrop.runtime.oci import Bind, bundle_config, find_oci_runtime, probe, seccomp_profile
from ondrop.runtime.rootfs import busybox_rootfs

IMAGE = "localhost/ondrop-bench-busybox:1"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def bare_crun(scratch: Path, runs: int) -> tuple[list[float], str]:
    engine = detect("podman")
    assert engine is not None
    image = engine.ensure(IMAGE, "never")
    rootfs = Images(engine, scratch / "images", pull="never").rootfs(image)
    oci = find_oci_runtime()
    assert oci is not None and probe(oci, scratch) is None, "no usable crun or runc"
    # What ondrop writes for a job: the job's folders bound in, its hosts file, podman's
    # system-call filter, a pids limit, a cgroup of its own.
    work = scratch / "work"
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir(parents=True)
    (work / "script").write_text("true\n")
    (work / "hosts").write_text("127.0.0.1 localhost bench\n")
    binds = [
        Bind(work / "input", "/ondrop/input", readonly=True),
        Bind(work / "output", "/ondrop/output"),
        Bind(work / "tmp", "/tmp"),
        Bind(work / "script", "/ondrop/script", readonly=True),
        Bind(work / "hosts", "/etc/hosts", readonly=True),
    ]
    samples = []
    for i in range(runs):
        bundle = scratch / f"bundle-{i}"
        bundle.mkdir()
        config = bundle_config(
            rootfs=rootfs,
            args=["true"],
            env={"PATH": "/bin"},
            cwd="/",
            binds=binds,
            hostname="bench",
            cgroups_path=f"/ondrop/bench-{i}/job",
            pids=1024,
            seccomp=seccomp_profile(),
        )
        (bundle / "config.json").write_text(json.dumps(config))
        samples.append(timed([oci.binary, "run", "--bundle", str(bundle), f"bench-{i}"]))
        JobCgroup(f"bench-{i}", None).remove()
    return samples, oci.name


def podman_run(runs: int) -> list[float]:
    return [
        timed(["podman", "run", "--rm", "--network", "none", IMAGE, "true"]) for _ in range(runs)
    ]


def ondrop_run(scratch: Path, runs: int) -> tuple[list[float], list[float]]:
    """/run round trips of a service with a fresh container per job and of one that keeps
    its container warm, taken in turns."""
    data = scratch / "data"
    env = {**os.environ, "ONDROP_DATA": str(data), "ONDROP_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ondrop", "up", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data / "endpoint.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "ondrop up failed"
            time.sleep(0.05)
        url = json.loads((data / "endpoint.json").read_text())["url"]
        password = json.loads((data / "admin.json").read_text())["password"]
        with Client(url, "admin", password) as client:
            while not client.health():
                time.sleep(0.05)
            client.apply(
                [
                    {"name": "noop", "image": IMAGE, "script": "true"},
                    {"name": "noop-warm", "image": IMAGE, "script": "true", "warm": 60},
                ]
            )
            samples: dict[str, list[float]] = {"noop": [], "noop-warm": []}
            for service in samples:  # the first job unpacks the image
                for _ in range(3):
                    client.run(service, b"")
            for _ in range(runs):
                for service, taken in samples.items():
                    started = time.perf_counter()
                    client.run(service, b"")
                    taken.append(time.perf_counter() - started)
        return samples["noop"], samples["noop-warm"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    engine = detect("podman")
    if engine is None or os.geteuid() != 0:
        sys.exit("this benchmark needs podman and root")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if engine.image(IMAGE) is None:
            engine.import_rootfs(busybox_rootfs(scratch / "rootfs.tar"), IMAGE)
        crun, oci_name = bare_crun(scratch, args.runs)
        podman = podman_run(max(5, args.runs // 4))
        ondrop, warm = ondrop_run(scratch, args.runs)
    floor = summary(crun)[0]
    rows = [
        (f"bare {oci_name} run", crun),
        ("podman run --rm", podman),
        ("ondrop /run, end to end", ondrop),
        ("ondrop /run, warm container (`warm: 60`)", warm),
    ]
    lines = [
        "| start to exit of `true` | p50 ms | min ms | max ms | runs | vs bare |",
        "|---|---|---|---|---|---|",
    ]
    for label, samples in rows:
        p50, low, high = summary(samples)
        lines.append(
            f"| {label} | {p50:.1f} | {low:.1f} | {high:.1f} | {len(samples)} | "
            f"{p50 / floor:.1f}x |"
        )
    p50_ondrop, p50_podman = summary(ondrop)[0], summary(podman)[0]
    verdict = (
        f"ondrop / bare {oci_name}: {p50_ondrop / floor:.1f}x (target at most 3x, "
        f"{'met' if p50_ondrop <= 3 * floor else 'missed'}); podman run / ondrop: "
        f"{p50_podman / p50_ondrop:.1f}x (target at least 5x, "
        f"{'met' if p50_podman >= 5 * p50_ondrop else 'missed'}); warm / bare "
        f"{oci_name}: {summary(warm)[0] / floor:.1f}x"
    )
    table = "\n".join(lines)
    print(table)
    print(verdict)
    write_section(
        "cold-start",
        f"""## Cold start of a containerised job

`.venv/bin/python bench/cold_start.py --runs {args.runs}` (as root, podman installed). The
same busybox image and `true` every time; ondrop's figures are whole `/run` round trips
through the platform (HTTP, store, stage in and out, a fresh container; or, for the
warm row, `true` exec'd in a container kept between jobs), the two taken in turns.

{table}

{verdict}.""",
    )


if __name__ == "__main__":
    main()
