"""ondrop on a real Ray cluster (a head and two nodes on loopback, one with a GPU): `ondrop
up --backend ray` runs both pools' jobs on the nodes, each job names the node it ran on,
chains cross nodes, GPU jobs run only where a GPU is free, one per GPU, and a job whose
node is lost runs again elsewhere without using up its retries."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ondrop.client import Client
from tests.support.ray_cluster import Node, RayCluster, ray_env
from tests.support.up import Platform, RayPlatform
from tests.support.waiting import processes_with, wait_for

UPPER = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'


@pytest.fixture(scope="module")
def on_ray(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = RayPlatform(tmp_path_factory.mktemp("on-ray") / "data", ray_cluster.address)
    platform.start()
    yield platform
    platform.stop()


@pytest.fixture
def client(on_ray: Platform) -> Iterator[Client]:
    with on_ray.client() as client:
        yield client


def io(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "input": [{"storage_provider": "minio.default", "path": f"ray/{name}-in"}],
        "output": [{"storage_provider": "minio.default", "path": f"ray/{name}-out"}],
        **extra,
    }


def drop(client: Client, tmp_path: Path, service: str, name: str, text: str) -> str:
    """Upload a file into the service's input folder; the id of the job it started."""
    path = tmp_path / name
    path.write_text(text)
    answer = client.upload("minio.default", f"ray/{service}-in/{name}", path)
    (job,) = answer["jobs"]
    return str(job["job"])


def finished(client: Client, service: str, job: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = client.job(service, job)
        return found if found["status"] in ("Succeeded", "Failed") else None

    found: dict[str, Any] = wait_for(done, timeout)
    assert found["status"] == "Succeeded", (found, client.logs(service, job))
    return found


def workers(cluster: RayCluster) -> set[str]:
    return {node.ip for node in cluster.nodes if not node.head}


@pytest.mark.parametrize("mode", ["faas", "batch"])
def test_jobs_of_both_pools_run_on_worker_nodes_and_name_theirs(
    mode: str, client: Client, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    service = f"up-{mode}"
    client.apply([io(service, mode=mode, script=UPPER)])
    job = drop(client, tmp_path, service, "a.txt", "hello ray\n")
    found = finished(client, service, job)
    assert found["node"] in workers(ray_cluster)
    assert found["pool"] == mode
    got = tmp_path / "got.txt"
    client.download("minio.default", f"ray/{service}-out/a.txt", got)
    assert got.read_text() == "HELLO RAY\n"


def test_a_chain_runs_across_the_nodes(client: Client, tmp_path: Path) -> None:
    first = io("chain-a", mode="batch", script=UPPER)
    second = {
        **io("chain-b", mode="batch", script='rev "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/b.txt"'),
        "input": first["output"],
    }
    client.apply([first, second])
    job = drop(client, tmp_path, "chain-a", "c.txt", "abc\n")
    finished(client, "chain-a", job)
    (after,) = wait_for(lambda: client.jobs("chain-b"))
    finished(client, "chain-b", after)
    got = tmp_path / "b.txt"
    client.download("minio.default", "ray/chain-b-out/b.txt", got)
    assert got.read_text() == "CBA\n"


def test_a_gpu_job_runs_on_the_gpu_node_with_rays_device_one_at_a_time(
    client: Client, gpu_node: Node, tmp_path: Path
) -> None:
    script = (
        'out="$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
        'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)" > "$out"\n'
        "sleep 1\n"
        'date +%s.%N >> "$out"\n'
    )
    client.apply([io("gpu", mode="batch", gpu=1, script=script)])
    jobs = [drop(client, tmp_path, "gpu", f"g{i}.txt", "x") for i in range(3)]
    spans = []
    for i, job in enumerate(jobs):
        assert finished(client, "gpu", job)["node"] == gpu_node.ip
        got = tmp_path / f"got{i}.txt"
        client.download("minio.default", f"ray/gpu-out/g{i}.txt", got)
        first, end = got.read_text().splitlines()
        devices, start = first.split()
        assert devices == "0"  # the id Ray gave it, kept by the supervisor
        spans.append((float(start), float(end)))
    spans.sort()
    for earlier, later in itertools.pairwise(spans):
        assert earlier[1] <= later[0], f"two jobs held the one GPU at once: {spans}"


def test_a_job_whose_node_is_lost_runs_again_elsewhere_without_using_its_retries(
    ray_installed: None, tmp_path: Path
) -> None:
    """On a cluster of its own (it kills a node): the one node runs the job and is lost;
    the job waits for a node, and runs on the one added after."""
    with RayCluster() as cluster:
        cluster.start(head_cpus=0)
        victim = cluster.add_node(num_cpus=2)
        platform = RayPlatform(tmp_path / "data", cluster.address)
        platform.start()
        try:
            with platform.client() as client:
                marker = f"lost-node-{time.monotonic_ns()}"
                script = f"sh -c 'sleep 5' {marker}\n{UPPER}"  # the marker: in its command line
                client.apply([io("lost", mode="batch", retries=0, script=script)])
                job = drop(client, tmp_path, "lost", "l.txt", "lost\n")
                wait_for(lambda: processes_with(marker), timeout=120)
                victim.kill()
                wait_for(lambda: not any(s.alive for s in cluster.states() if s.ip == victim.ip))
                rescuer = cluster.add_node(num_cpus=2)
                try:
                    found = finished(client, "lost", job, timeout=300)
                except AssertionError:
                    raise AssertionError(
                        f"{client.job('lost', job)}\n{platform.stop()[-4000:]}"
                    ) from None
                assert found["node"] == rescuer.ip
                attempts = found["attempt_list"]
                assert [a["cause"] for a in attempts[:-1]] == ["lost"], attempts
                keys = [o["key"] for o in client.list_files("minio.default", "ray/lost-out/")]
                assert keys == ["ray/lost-out/l.txt"]
        finally:
            platform.stop()


def test_cancel_and_timeouts_reach_jobs_on_the_nodes(client: Client, tmp_path: Path) -> None:
    marker = f"cancel-me-{time.monotonic_ns()}"
    client.apply(
        [
            io("slow-batch", mode="batch", script=f"sh -c 'sleep 600' {marker}"),
            io("slow-faas", mode="faas", timeout=2, script="sleep 600"),
        ]
    )
    job = drop(client, tmp_path, "slow-batch", "s.txt", "x")
    wait_for(lambda: processes_with(marker), timeout=120)
    client.cancel("slow-batch", job)
    cancelled = wait_for(lambda: client.job("slow-batch", job)["status"] == "Cancelled", 60)
    assert cancelled
    wait_for(lambda: not processes_with(marker), timeout=60)  # the script itself was stopped
    timed = drop(client, tmp_path, "slow-faas", "t.txt", "x")
    ended = wait_for(lambda: (j := client.job("slow-faas", timed))["status"] == "Failed" and j)
    assert ended["reason"] == "timed out after 2 s"


def test_a_faas_timeout_of_a_hybrid_service_finishes_on_the_ray_batch_pool(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """SCAR's lambda-batch: the Lambda part on this machine, the Batch part on the cluster."""
    backends = ("--faas-backend", "local", "--batch-backend", "ray")
    platform = RayPlatform(tmp_path / "data", ray_cluster.address, *backends)
    platform.start("--faas-max-timeout", "1")
    try:
        with platform.client() as client:
            script = 'sleep 3; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
            client.apply([io("grow", mode="hybrid", script=script)])
            job = drop(client, tmp_path, "grow", "h.txt", "hybrid")
            found = finished(client, "grow", job)
            first, second = found["attempt_list"]
            assert (first["pool"], first["reason"]) == ("faas", "timed out after 1 s")
            assert second["pool"] == "batch" and found["node"] in workers(ray_cluster)
    finally:
        platform.stop()


def test_the_control_plane_killed_while_jobs_run_on_the_cluster_loses_nothing(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    platform = RayPlatform(tmp_path / "data", ray_cluster.address)
    platform.start()
    marker = f"killed-plane-{time.monotonic_ns()}"
    script = f"sh -c 'sleep 3' {marker}\n" + UPPER
    try:
        with platform.client() as client:
            client.apply([io("survive", mode="batch", script=script)])
            jobs = [drop(client, tmp_path, "survive", f"k{i}.txt", f"k{i}\n") for i in range(3)]
            wait_for(lambda: processes_with(marker), timeout=120)
        assert platform.proc is not None
        platform.proc.kill()  # SIGKILL: nothing of it runs its clean-up
        platform.proc.communicate(timeout=30)
        platform.start()
        with platform.client() as client:
            for job in jobs:
                finished(client, "survive", job)
            keys = sorted(o["key"] for o in client.list_files("minio.default", "ray/survive-out/"))
            assert keys == [f"ray/survive-out/k{i}.txt" for i in range(3)]
            for i in range(3):
                got = tmp_path / f"got{i}"
                client.download("minio.default", f"ray/survive-out/k{i}.txt", got)
                assert got.read_text() == f"K{i}\n"
    finally:
        platform.stop()


def test_a_cluster_that_cannot_be_reached_is_said_at_start_and_in_health_and_jobs_wait(
    ray_installed: None, tmp_path: Path
) -> None:
    platform = Platform(tmp_path / "data")
    platform.env.update(ray_env())
    nowhere = "127.0.0.2:9"  # nothing listens there
    platform.start("--backend", "ray", "--ray-address", nowhere, timeout=120, degraded=True)
    try:
        health = httpx.get(f"{platform.url}/health", timeout=10)
        assert health.status_code == 503
        assert f"the Ray cluster at {nowhere}" in health.text
        with platform.client() as client:
            shared = tmp_path / "shared"
            shared.mkdir()
            service = {
                "name": "waits",
                "mode": "batch",
                "script": "true",
                "input": [{"storage_provider": "local.here", "path": "in"}],
                "storage_providers": {"local": {"here": {"path": str(shared), "shared": True}}},
            }
            client.apply([service])
            job = client.submit("waits", b"{}")
            time.sleep(2)  # the scheduler looks every second: it must not take the job
            assert client.job("waits", job)["status"] == "Pending"
    finally:
        platform.stop()


@pytest.mark.parametrize("mode", ["faas", "batch"])
def test_invocations_reach_the_nodes_and_run_answers_come_back(
    mode: str, client: Client, ray_cluster: RayCluster
) -> None:
    """An invocation's body and a /run job's outputs travel through the object store the
    nodes reach, not through the control plane's disk."""
    service = f"invoked-{mode}"
    client.apply([io(service, mode=mode, script=UPPER)])
    job = client.submit(service, b"sent by post\n", filename="posted.txt")
    assert finished(client, service, job)["node"] in workers(ray_cluster)
    stored = client.list_files("minio.default", f"ray/{service}-out/")
    assert [o["key"] for o in stored] == [f"ray/{service}-out/posted.txt"]
    answer = client.run(service, b"run me\n", filename="ran.txt", timeout=180)
    assert (answer.data, answer.filename) == (b"RUN ME\n", "ran.txt"), answer
    assert client.job(service, answer.job_id)["node"] in workers(ray_cluster)
    # and nothing is left in transit
    assert client.list_files("minio.default", "ondrop-transit/") == []


def test_a_job_waiting_for_a_node_does_not_hold_up_a_stop_and_waits_again_after(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    platform = RayPlatform(tmp_path / "data", ray_cluster.address, ONDROP_GRACE="1")
    platform.start()
    with platform.client() as client:
        client.apply([io("huge", mode="batch", cpu="64", script="true")])  # no node has 64
        job = drop(client, tmp_path, "huge", "h.txt", "x")
        wait_for(lambda: client.job("huge", job)["status"] == "Running")
    platform.stop()  # AssertionError if it hangs
    platform.start()
    try:
        with platform.client() as client:
            attempts = client.job("huge", job)["attempt_list"]
            assert attempts[0]["cause"] == "stopped"
            assert client.job("huge", job)["status"] in ("Pending", "Running")
    finally:
        platform.stop()


@pytest.mark.parametrize("mode", ["faas", "batch"])
def test_a_container_service_runs_in_its_image_on_a_node(
    mode: str, client: Client, ray_cluster: RayCluster, busybox: str, tmp_path: Path
) -> None:
    """The node's own engine runs the image (the test nodes share this machine's podman,
    where the image was built): the script sees the image's files, not the host's."""
    service = f"boxed-{mode}"
    script = (
        "if [ -e /etc/debian_version ]; then echo host; else echo image; fi"
        ' > "$TMP_OUTPUT_DIR/where"\n' + UPPER
    )
    client.apply([io(service, mode=mode, image=busybox, script=script)])
    job = drop(client, tmp_path, service, "d.txt", "in a box\n")
    found = finished(client, service, job)
    assert found["node"] in workers(ray_cluster)
    for name, text in (("d.txt", "IN A BOX\n"), ("where", "image\n")):
        got = tmp_path / f"got-{name}"
        client.download("minio.default", f"ray/{service}-out/{name}", got)
        assert got.read_text() == text
