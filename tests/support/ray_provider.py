"""Ray's fake_multinode node provider, but on loopback: the nodes the autoscaler starts get
127.0.0.101, 127.0.0.102, ... and a block of ports each, like RayCluster's own nodes. Ray's
provider puts them on the machine's routable address (ray.util.get_node_ip_address() in the
head's monitor) with random ports. The head's monitor imports this module (provider type
`external`, tests/support/autoscaler.py), so it needs nothing beyond Ray and the stdlib."""

from __future__ import annotations

import copy
import json
from typing import Any

import ray._private.node
import ray._private.parameter
import ray._private.ray_constants as ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from tests.support.ray_ports import NodePorts, claim_ports, release_ports


class LoopbackFakeProvider(FakeMultiNodeProvider):  # type: ignore[misc, unused-ignore]
    """Its provider config adds `first_host` (the last octet of the first node's address),
    `port_blocks` (the bases of the blocks it may give nodes) and `temp_root` (where each
    node's temp folder goes) to fake_multinode's."""

    def _create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> None:
        # the body of FakeMultiNodeProvider's, with an address, ports and a temp folder
        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            next_id = self._next_hex_node_id()  # type: ignore[no-untyped-call, unused-ignore]
            host = int(self.provider_config["first_host"]) + self._next_node_id - 1
            ports: NodePorts = claim_ports(among=self.provider_config["port_blocks"])
            ray_params = ray._private.parameter.RayParams(
                node_ip_address=f"127.0.0.{host}",
                node_manager_port=ports.node_manager,
                object_manager_port=ports.object_manager,
                metrics_export_port=ports.metrics_export,
                metrics_agent_port=ports.dashboard_agent_grpc,
                dashboard_agent_listen_port=ports.dashboard_agent_listen,
                runtime_env_agent_port=ports.runtime_env_agent,
                min_worker_port=ports.min_worker,
                max_worker_port=ports.max_worker,
                dashboard_port=None,
                temp_dir=f"{self.provider_config['temp_root']}/a{host}",
                num_cpus=int(resources.pop("CPU", 0)),
                num_gpus=int(resources.pop("GPU", 0)),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": next_id,
                    "RAY_CLOUD_INSTANCE_ID": next_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(
                ray_params, head=False, shutdown_at_exit=False, spawn_reaper=False
            )
            all_tags = {
                TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                TAG_RAY_USER_NODE_TYPE: node_type,
                TAG_RAY_NODE_NAME: next_id,
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                **tags,
            }
            entry: dict[str, Any] = {"tags": all_tags, "node": node, "ports": ports}
            self._nodes[next_id] = entry

    def _terminate_node(self, node: dict[str, Any]) -> None:
        super()._terminate_node(node)  # type: ignore[no-untyped-call, unused-ignore]
        release_ports(node["ports"])
