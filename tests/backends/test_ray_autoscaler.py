"""Ray's autoscaler is ondrop's elasticity: with no worker nodes, tasks that need what only
a worker type has make it start nodes of that type (fake_multinode's local processes, on
loopback), the tasks run there, and once idle the nodes go, back to zero."""

from __future__ import annotations

from tests.support.autoscaler import WorkerType, start_autoscaling
from tests.support.ray_cluster import NodeState, RayCluster, TaskSpec

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
