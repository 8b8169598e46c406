"""Ports for the Ray nodes of the tests: each node owns a block of 100, one for each Ray
component and 50 for its workers, so that several nodes (and clusters) share the machine's
loopback. Ray's gRPC servers bind every address, so a block is free only when no address
uses it."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass

HEAD_IP = "127.0.0.2"  # never 127.0.0.1: Ray silently replaces it with the machine's address

# Below Linux's ephemeral range (32768-60999, so no client socket takes one meanwhile) and
# above 10002-19999 (Ray's own default worker ports).
BLOCK = 100
BLOCKS = range(20000, 32700, BLOCK)
_claimed: set[int] = set()


class PortsExhausted(RuntimeError):
    pass


@dataclass(frozen=True)
class NodePorts:
    """A node's block of ports: one for each Ray component, 50 for its workers."""

    base: int
    gcs: int  # the head's: the cluster's address
    client_server: int  # the head's
    dashboard: int  # the head's
    node_manager: int
    object_manager: int
    metrics_export: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    autoscaler_metrics: int  # the head's monitor (AUTOSCALER_METRIC_PORT, else 44217)
    dashboard_metrics: int  # the head's dashboard (DASHBOARD_METRIC_PORT, else 44227)
    min_worker: int
    max_worker: int

    @staticmethod
    def block(base: int) -> NodePorts:
        return NodePorts(
            base=base,
            gcs=base,
            client_server=base + 1,
            dashboard=base + 2,
            node_manager=base + 3,
            object_manager=base + 4,
            metrics_export=base + 5,
            dashboard_agent_listen=base + 6,
            dashboard_agent_grpc=base + 7,
            runtime_env_agent=base + 8,
            autoscaler_metrics=base + 9,
            dashboard_metrics=base + 10,
            min_worker=base + 50,
            max_worker=base + BLOCK - 1,
        )


def _block_is_free(base: int) -> bool:
    for port in range(base, base + BLOCK):
        with socket.socket() as sock:
            # SO_REUSEADDR: a port with connections in TIME_WAIT is free; a listener is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))  # every address: Ray's gRPC servers bind all of them
            except OSError:
                return False
    return True


def claim_ports(among: Sequence[int] | None = None) -> NodePorts:
    """A block of ports that nothing listens on and that this process has not handed out;
    from `among` (block bases) when given, else from all of them in random order."""
    bases = list(among) if among is not None else random.sample(BLOCKS, len(BLOCKS))
    for base in bases:
        if base not in _claimed and _block_is_free(base):
            _claimed.add(base)
            return NodePorts.block(base)
    raise PortsExhausted(f"no free block of {BLOCK} ports among {len(bases)}")


def release_ports(ports: NodePorts) -> None:
    _claimed.discard(ports.base)


def port_flags(ports: NodePorts, head: bool) -> list[str]:
    """`ray start`'s flags for every port of a node."""
    flags = [
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        f"--metrics-export-port={ports.metrics_export}",
        f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
        f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
        f"--runtime-env-agent-port={ports.runtime_env_agent}",
        f"--min-worker-port={ports.min_worker}",
        f"--max-worker-port={ports.max_worker}",
    ]
    if head:
        flags += [
            f"--port={ports.gcs}",
            f"--ray-client-server-port={ports.client_server}",
            f"--dashboard-port={ports.dashboard}",
            f"--dashboard-host={HEAD_IP}",
        ]
    return flags
