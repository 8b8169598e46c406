"""A real multi-node Ray cluster on loopback for the tests: `ray start` daemons for a head
on 127.0.0.2 and nodes on 127.0.0.3, 127.0.0.4, ..., every port chosen here
(tests/support/ray_ports.py), and every node's processes marked so that stopping or losing
one kills exactly what it started (plain `ray stop` would kill every Ray on the machine).
Drivers run in subprocesses (tests/support/ray_driver.py), so the test process keeps no Ray
connection of its own."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.ray_driver import NodeState, TaskReport, TaskSpec
from tests.support.ray_ports import HEAD_IP, NodePorts, claim_ports, port_flags, release_ports
from tests.support.ray_processes import MARKER, Unkillable, kill_all, processes_of

__all__ = [  # the value types come from the driver, which reports them
    "HEAD_IP",
    "Node",
    "NodePorts",
    "NodeState",
    "RayCluster",
    "RayClusterError",
    "TaskReport",
    "TaskSpec",
    "ray_binary",
    "ray_env",
]

REPO = Path(__file__).resolve().parents[2]
FIRST_NODE_HOST = 3  # nodes on 127.0.0.3, 127.0.0.4, ...
LAST_NODE_HOST = 100  # (the autoscaler's nodes start at 127.0.0.101)
# Every node of this process on an address of its own, whichever cluster it joins: two
# clusters with a node each on one address made `ray start` time out under load.
_hosts = itertools.cycle(range(FIRST_NODE_HOST, LAST_NODE_HOST + 1))


class RayClusterError(RuntimeError):
    """A node did not start, did not come up, or a driver failed; the message holds the
    logs' tails."""


def ray_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Ray process the tests start, drivers included: no auth
    (else a driver's bare `ray.init()` writes ~/.ray/auth_token, which later `ray start`
    runs pick up), no usage stats, and this repository importable (for the autoscaler's
    node provider in tests/support/ray_provider.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", MARKER)}
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


# -- nodes ---------------------------------------------------------------------------


@dataclass
class Node:
    """One `ray start` on this machine: a head or a worker node."""

    ip: str
    ports: NodePorts
    temp_dir: Path
    head: bool = False
    session: int = 0  # the pid of its `ray start`, leader of the session its processes share
    output: str = ""  # what `ray start` printed

    @property
    def node_manager_address(self) -> str:
        return f"{self.ip}:{self.ports.node_manager}"

    def pids(self) -> list[int]:
        """Its processes: raylet, agents, workers; on the head also GCS, monitor, dashboard
        and the nodes that the autoscaler started."""
        return processes_of(self.session, str(self.temp_dir)) if self.session else []

    def kill(self) -> None:
        """SIGKILL every process of the node, as when its machine is lost."""
        kill_all(self.pids())

    def log_tail(self, lines: int = 25) -> str:
        """The end of `ray start`'s output and of the node's main logs."""
        parts = [f"--- ray start {self.ip} ---\n{self.output[-3000:]}"]
        logs = self.temp_dir / "session_latest" / "logs"
        for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "monitor.log"):
            path = logs / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                # each driver (a poll of the node list) is a job that every raylet logs
                tail = [line for line in text if "already started in worker pool" not in line]
                tail = tail[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)


# -- the cluster ---------------------------------------------------------------------

_env_users = 0
_saved_auth_mode: str | None = None


def _hold_auth_mode() -> None:
    """RAY_AUTH_MODE=disabled in this process while a cluster runs (for an in-process
    `ray.init()` by the code under test), restored when the last one stops."""
    global _env_users, _saved_auth_mode
    if _env_users == 0:
        _saved_auth_mode = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
    _env_users += 1


def _release_auth_mode() -> None:
    global _env_users
    _env_users -= 1
    if _env_users == 0:
        if _saved_auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = _saved_auth_mode


class RayCluster:
    """A head on 127.0.0.2 and nodes added one by one; `with RayCluster() as c: c.start()`.

    Every subprocess and every wait has a timeout: a wrong address makes Ray hang."""

    def __init__(
        self,
        *,
        object_store_memory: int = 80 * 1000 * 1000,
        include_dashboard: bool = False,
        system_config: Mapping[str, Any] | None = None,
        timeout: float = 180.0,
    ) -> None:
        self.object_store_memory = object_store_memory
        self.include_dashboard = include_dashboard
        self.system_config = dict(system_config or {})
        self.timeout = timeout
        # short: Ray's unix sockets live under it and their paths must stay under 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.head_ports = claim_ports()
        self.nodes: list[Node] = []  # the head first
        self.reserved: list[NodePorts] = []  # for nodes that others start (the autoscaler)
        self._holds_env = False

    @property
    def address(self) -> str:
        """The GCS address, "127.0.0.2:PORT", for `ray start --address` and `ray.init`."""
        return f"{HEAD_IP}:{self.head_ports.gcs}"

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def reserve_ports(self, count: int) -> list[NodePorts]:
        """Blocks of ports no other cluster of this process takes until this one stops."""
        self.reserved += [claim_ports() for _ in range(count)]
        return self.reserved[-count:]

    def start(
        self,
        head_cpus: int = 0,
        *,
        head_resources: Mapping[str, float] | None = None,
        autoscaling_config: Mapping[str, Any] | None = None,
    ) -> Node:
        """Start the head (its GCS, raylet, monitor) and wait until the GCS lists it alive.
        With `autoscaling_config`, the monitor autoscales with that cluster config (see
        tests/support/autoscaler.py)."""
        if self.nodes:
            raise RayClusterError("the cluster is already started")
        if not self._holds_env:
            _hold_auth_mode()
            self._holds_env = True
        flags = [
            "--head",
            f"--num-cpus={head_cpus}",
            f"--include-dashboard={str(self.include_dashboard).lower()}",
        ]
        if self.system_config:
            flags.append(f"--system-config={json.dumps(self.system_config)}")
        env = {
            "AUTOSCALER_METRIC_PORT": str(self.head_ports.autoscaler_metrics),
            "DASHBOARD_METRIC_PORT": str(self.head_ports.dashboard_metrics),
        }
        if autoscaling_config is not None:
            config = self.root / "autoscaling.json"
            config.write_text(json.dumps(autoscaling_config, indent=1))
            flags.append(f"--autoscaling-config={config}")
            env |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        return self._start_node(
            HEAD_IP, self.head_ports, "h", flags, 0, head_resources, env, head=True
        )

    def add_node(
        self, num_cpus: int, num_gpus: int = 0, resources: Mapping[str, float] | None = None
    ) -> Node:
        """Start a worker node on the next loopback address; returns once it is alive."""
        if not self.nodes:
            raise RayClusterError("start the head first")
        ip = f"127.0.0.{next(_hosts)}"
        flags = [f"--address={self.address}", f"--num-cpus={num_cpus}"]
        return self._start_node(
            ip, claim_ports(), f"n{ip.rsplit('.', 1)[1]}", flags, num_gpus, resources
        )

    def _start_node(
        self,
        ip: str,
        ports: NodePorts,
        folder: str,
        flags: list[str],
        num_gpus: int,
        resources: Mapping[str, float] | None,
        env: Mapping[str, str] | None = None,
        head: bool = False,
    ) -> Node:
        temp_dir = self.root / folder
        temp_dir.mkdir()
        node = Node(ip, ports, temp_dir, head=head)
        binary = ray_binary()
        if binary is None:
            raise RayClusterError("no `ray` command (pip install 'ondrop[ray]')")
        command = [
            binary,
            "start",
            *flags,
            f"--node-ip-address={ip}",
            *port_flags(ports, head),
            f"--object-store-memory={self.object_store_memory}",
            f"--num-gpus={num_gpus}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--log-color=false",
        ]
        if resources:
            command.append(f"--resources={json.dumps(dict(resources))}")
        # a session of its own: the daemons `ray start` leaves behind stay in it
        proc = subprocess.Popen(
            command,
            env=ray_env({MARKER: str(temp_dir), **(env or {})}),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        node.session = proc.pid
        self.nodes.append(node)
        try:
            node.output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            node.output, _ = proc.communicate()
            raise RayClusterError(
                f"`ray start` for {ip} ran past {self.timeout:g} s\n{node.log_tail()}"
            ) from None
        if proc.returncode != 0:
            raise RayClusterError(
                f"`ray start` for {ip} exited with {proc.returncode}\n{node.log_tail()}"
            )
        self.wait_for_nodes(
            lambda states: any(
                s.alive and s.node_manager_address == node.node_manager_address for s in states
            ),
            what=f"node {node.node_manager_address} alive",
            logs_of=node,
        )
        return node

    # -- drivers -------------------------------------------------------------------

    def driver(self, command: str, argument: Any = None, timeout: float = 120.0) -> Any:
        """Run tests/support/ray_driver.py `command` in a fresh driver process connected to
        this cluster; what it printed, as JSON."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.ray_driver", self.address, command]
            + ([json.dumps(argument)] if argument is not None else []),
            env=ray_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RayClusterError(
                f"driver {command} exited with {done.returncode}:\n{done.stderr[-4000:]}"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])

    def states(self, timeout: float = 60.0) -> list[NodeState]:
        """Every node the GCS knows of, alive or dead."""
        return [NodeState(**state) for state in self.driver("nodes", timeout=timeout)]

    def run_tasks(self, tasks: Sequence[TaskSpec], timeout: float = 120.0) -> list[TaskReport]:
        """Run `tasks` at once from one driver and report where each ran."""
        reports = self.driver("tasks", [asdict(task) for task in tasks], timeout=timeout)
        return [TaskReport(**report) for report in reports]

    def wait_for_nodes(
        self,
        check: Callable[[list[NodeState]], bool],
        what: str = "the nodes",
        timeout: float | None = None,
        logs_of: Node | None = None,
    ) -> list[NodeState]:
        """The GCS's node list once `check` holds for it; RayClusterError with the logs'
        tails after `timeout` (the cluster's, by default)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        states: list[NodeState] = []
        error = ""
        while time.monotonic() < deadline:
            try:
                states = self.states(timeout=max(5.0, deadline - time.monotonic()))
            except (RayClusterError, subprocess.TimeoutExpired) as exc:
                error = str(exc)  # the GCS may not answer yet
            else:
                if check(states):
                    return states
            time.sleep(0.2)
        logs = (logs_of or self.head).log_tail() if self.nodes else ""
        raise RayClusterError(
            f"{what}: not after {limit:g} s; last seen {states}\n{error[-2000:]}\n{logs}"
        )

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        """Kill every process of every node (the head last) and remove their folders."""
        errors = []
        for node in reversed(self.nodes):
            try:
                node.kill()
            except Unkillable as exc:
                errors.append(str(exc))
        try:
            if errors:
                raise RayClusterError("; ".join(errors))
        finally:
            for ports in [self.head_ports, *(n.ports for n in self.nodes), *self.reserved]:
                release_ports(ports)
            self.nodes, self.reserved = [], []
            shutil.rmtree(self.root, ignore_errors=True)
            if self._holds_env:
                _release_auth_mode()
                self._holds_env = False

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ray_binary() -> str | None:
    """The `ray` command beside this Python (in its virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")
