"""An autoscaling RayCluster: the head's monitor runs Ray's fake_multinode provider (as
tests/support/ray_provider.py, on loopback), which starts worker nodes as local processes
when tasks wait for resources that only a worker type has, and stops them once idle. Ray's
wheel lacks the provider's example config, so the config is written here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.ray_cluster import RayCluster

PROVIDER = "tests.support.ray_provider.LoopbackFakeProvider"
FIRST_HOST = 101  # the autoscaler's n-th node gets 127.0.0.(100 + n)


@dataclass(frozen=True)
class WorkerType:
    """A kind of machine the autoscaler may start: what Ray sees on it and how many."""

    name: str
    cpus: int = 2
    gpus: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    min_workers: int = 0
    max_workers: int = 2
    object_store_memory: int = 80 * 1000 * 1000

    def node_type(self) -> dict[str, Any]:
        return {
            "resources": {
                "CPU": self.cpus,
                "GPU": self.gpus,
                "object_store_memory": self.object_store_memory,
                **self.resources,
            },
            "node_config": {},
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
        }


def fake_multinode_config(
    cluster: RayCluster,
    workers: Sequence[WorkerType],
    *,
    head_cpus: int = 0,
    idle_timeout_minutes: float = 0.1,
) -> dict[str, Any]:
    """A cluster config for `ray start --head --autoscaling-config`, the fields of Ray's
    fake_multi_node/example.yaml; the port blocks its nodes may use are reserved here."""
    most = sum(worker.max_workers for worker in workers)
    blocks = [ports.base for ports in cluster.reserve_ports(most + 1)]  # one to spare
    return {
        "cluster_name": "ondrop-tests",
        "max_workers": most,
        "provider": {
            "type": "external",
            "module": PROVIDER,
            "gcs_address": cluster.address,
            "first_host": FIRST_HOST,
            "port_blocks": blocks,
            "temp_root": str(cluster.root),
            # as fake_multinode's: nodes are told apart by id (their addresses may repeat),
            # and there is nothing to set up on them
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": head_cpus},
                "node_config": {},
                "max_workers": 0,
            },
            **{worker.name: worker.node_type() for worker in workers},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def start_autoscaling(
    cluster: RayCluster,
    workers: Sequence[WorkerType],
    *,
    head_cpus: int = 0,
    idle_timeout_minutes: float = 0.1,
) -> None:
    """Start `cluster`'s head with an autoscaler that may add nodes of the `workers` types."""
    config = fake_multinode_config(
        cluster, workers, head_cpus=head_cpus, idle_timeout_minutes=idle_timeout_minutes
    )
    cluster.start(head_cpus, autoscaling_config=config)
