"""A Ray driver run in a subprocess by tests/support/ray_cluster.py, so that the test
process holds no Ray connection: `python -m tests.support.ray_driver ADDRESS COMMAND [JSON]`
prints one JSON line.

  nodes          every node the GCS knows of (NodeState's fields)
  tasks SPECS    runs TaskSpecs at once; where each ran (TaskReport's fields)

Ray is imported only by the driver process, not by the tests that import these types."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.ray_ports import HEAD_IP


@dataclass(frozen=True)
class NodeState:
    """A node as the GCS sees it (`ray.nodes()`)."""

    node_id: str
    ip: str
    port: int  # its node manager's
    alive: bool
    resources: Mapping[str, float]

    @property
    def node_manager_address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class TaskSpec:
    """A Ray task for a driver to run: its resource requests, and how long it sleeps."""

    num_cpus: float = 1
    num_gpus: float = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @staticmethod
    def on(ip: str, num_cpus: float = 1) -> TaskSpec:
        """A task pinned to the node at `ip` (through its `node:IP` resource)."""
        return TaskSpec(num_cpus=num_cpus, resources={f"node:{ip}": 0.001})


@dataclass(frozen=True)
class TaskReport:
    """Where a task ran and what Ray gave it."""

    ip: str
    node_id: str
    pid: int
    cuda_visible_devices: str | None
    gpu_ids: Sequence[int | str]


def nodes() -> list[dict[str, Any]]:
    import ray

    return [
        {
            "node_id": node["NodeID"],
            "ip": node["NodeManagerAddress"],
            "port": node["NodeManagerPort"],
            "alive": node["Alive"],
            "resources": node["Resources"],
        }
        for node in ray.nodes()
    ]


def report(seconds: float) -> dict[str, Any]:
    import ray

    time.sleep(seconds)
    context = ray.get_runtime_context()
    return {
        "ip": ray.util.get_node_ip_address(),
        "node_id": context.get_node_id(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_ids": list(ray.get_gpu_ids()),
    }


def tasks(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import ray

    remote = ray.remote(report)
    refs = [
        remote.options(
            num_cpus=spec["num_cpus"], num_gpus=spec["num_gpus"], resources=spec["resources"]
        ).remote(spec["seconds"])
        for spec in specs
    ]
    return list(ray.get(refs))


def main(address: str, command: str, argument: str | None = None) -> None:
    import ray

    ray.init(
        address=address,
        _node_ip_address=HEAD_IP,  # connect through the head's raylet, on loopback
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    try:
        found = nodes() if command == "nodes" else tasks(json.loads(argument or "[]"))
    finally:
        ray.shutdown()
    print(json.dumps(found))


if __name__ == "__main__":
    main(*sys.argv[1:])
