"""Ray's autoscaler is ondrop's elasticity: with no worker nodes, tasks that need what only
a worker type has make it start nodes of that type (fake_multinode's local processes, on
loopback), the tasks run there, and once idle the nodes go, back to zero; and the same
for a burst of ondrop's jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.autoscaler import WorkerType, start_autoscaling
from tests.support.ray_cluster import NodeState, RayCluster, TaskSpec
from tests.support.up import RayPlatform
from tests.support.waiting import wait_for

BURST = WorkerType("burst", cpus=2, resources={"burst": 2}, min_workers=0, max_workers=2)
SLOW = 300.0  # seconds: a head starts in ~10 s here and a node in ~7 s, more when busy


def workers(states: list[NodeState]) -> list[NodeState]:
    return [s for s in states if s.alive and "burst" in s.resources]


def test_tasks_needing_a_worker_type_scale_the_cluster_up_and_idle_scales_it_to_zero(
    ray_installed: None,
) -> None:
    with RayCluster() as cluster:
        start_autoscaling(cluster, [BURST], idle_timeout_minutes=0.1)
        assert workers(cluster.states()) == []

        reports = cluster.run_tasks(
            [TaskSpec(num_cpus=1, resources={"burst": 1}, seconds=1.0)] * 4, timeout=SLOW
        )

        assert {r.ip for r in reports} <= {f"127.0.0.{host}" for host in range(101, 111)}
        started = workers(cluster.states())
        assert {r.node_id for r in reports} <= {s.node_id for s in started}
        assert 1 <= len(started) <= BURST.max_workers
        cluster.wait_for_nodes(
            lambda states: workers(states) == [], what="no burst node left", timeout=SLOW
        )


def test_a_burst_of_ondrop_jobs_scales_the_cluster_up_and_idle_back_to_zero(
    ray_installed: None, tmp_path: Path
) -> None:
    """The same through ondrop: batch jobs ask Ray for their CPUs, which only a worker type
    has; the autoscaler starts nodes, the jobs run there, and idle nodes go."""
    with RayCluster() as cluster:
        start_autoscaling(cluster, [BURST], idle_timeout_minutes=0.1)
        assert workers(cluster.states()) == []
        platform = RayPlatform(tmp_path / "data", cluster.address)
        platform.start()
        try:
            with platform.client() as client:
                copy = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
                client.apply(
                    [
                        {
                            "name": "burst",
                            "mode": "batch",
                            "cpu": "1",
                            "script": f"sleep 1; {copy}",
                            "input": [{"storage_provider": "minio.default", "path": "burst/in"}],
                            "output": [{"storage_provider": "minio.default", "path": "burst/out"}],
                        }
                    ]
                )
                for i in range(4):
                    (tmp_path / f"{i}.txt").write_text(str(i))
                    client.upload("minio.default", f"burst/in/{i}.txt", tmp_path / f"{i}.txt")

                def done() -> dict[str, dict[str, Any]] | None:
                    jobs = client.jobs("burst")
                    ended = all(j["status"] in ("Succeeded", "Failed") for j in jobs.values())
                    return jobs if len(jobs) == 4 and ended else None

                jobs = wait_for(done, timeout=SLOW)
                assert {j["status"] for j in jobs.values()} == {"Succeeded"}
                autoscaled = {f"127.0.0.{host}" for host in range(101, 111)}
                assert {j["node"] for j in jobs.values()} <= autoscaled
                stored = client.list_files("minio.default", "burst/out/")
                assert sorted(o["key"] for o in stored) == [f"burst/out/{i}.txt" for i in range(4)]
            cluster.wait_for_nodes(
                lambda states: workers(states) == [], what="no burst node left", timeout=SLOW
            )
        finally:
            platform.stop()
