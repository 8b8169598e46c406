"""A real Ray cluster for the backend tests and the Backend contract suite, started once
per session on loopback: a head with no CPUs (so that every task runs on a worker node)
and two worker nodes of 2 CPUs, the first with one GPU (a resource Ray hands out; no
device is needed). The GCS checks nodes' health every second and gives one up after 3
failed checks, so a lost node is reported dead in seconds (Ray's default: every 3 s, 5
failures). Without Ray the tests skip, and fail under CI."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.support.ray_cluster import Node, RayCluster, ray_binary
from tests.support.servers import unavailable

FAST_HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


@pytest.fixture(scope="session")
def ray_installed() -> None:
    """Skips the test (fails it under CI) unless Ray and its `ray` command are installed."""
    if importlib.util.find_spec("ray") is None or ray_binary() is None:
        unavailable("Ray is not installed (pip install 'ondrop[ray]'; make setup does)")


@pytest.fixture(scope="session")
def ray_cluster(ray_installed: None) -> Iterator[RayCluster]:
    with RayCluster(system_config=FAST_HEALTH_CHECKS) as cluster:
        cluster.start(head_cpus=0)
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.add_node(num_cpus=2)
        yield cluster


@pytest.fixture(scope="session")
def gpu_node(ray_cluster: RayCluster) -> Node:
    return ray_cluster.nodes[1]


@pytest.fixture(scope="session")
def cpu_node(ray_cluster: RayCluster) -> Node:
    return ray_cluster.nodes[2]
