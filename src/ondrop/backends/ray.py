"""The Ray backend: a pool's jobs run on the nodes of a Ray cluster, so that a cluster
that grows with the work (Ray's autoscaler, KubeRay) runs the same services.

- faas: each node has a long-lived supervisor (an actor of no CPU of its own) that runs
  many jobs at once, warm: its storage clients are reused, no interpreter starts per job;
- batch: each job first reserves its cpu and memory from Ray (a placement group of one
  bundle), so Ray chooses a node that fits, or its autoscaler adds one; then the
  supervisor of that node runs it, as it runs a faas job: a job costs the node its
  script's own processes, not a Ray worker. A job that needs a GPU is a Ray task instead,
  so that Ray assigns the device and sets CUDA_VISIBLE_DEVICES.

On the node the supervisor isolates the job with the node's own process or container
runtime, as on one machine. What it must record before it writes an output goes through a
ledger relay (an actor) to the control plane, which records it in the store.

A job on a node that is lost ends with the cause `lost`, and runs again elsewhere without
using up the service's retries. Ray ends the tasks of a driver that died, so after a
restart of the control plane its jobs run again (adopt() takes none back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ondrop
from ondrop.backends.base import Backend, Listener
from ondrop.backends.transit import Transit
from ondrop.errors import UnavailableError
from ondrop.fdl.models import Service
from ondrop.jobs import Cause, JobSpec, Report
from ondrop.pools.base import Admission, Allocation, Node
from ondrop.pools.batch import BATCH_TIMEOUT, DEFAULT_MEMORY
from ondrop.quantity import format_bytes, parse_cpu
from ondrop.store.base import FAILED, INTERRUPTED, SUCCEEDED, Job, Outcome
from ondrop.supervisor import Ledger
from ondrop.worker import Configs, NodeWorker, close_workers, node_worker

log = logging.getLogger(__name__)

NAMESPACE = "ondrop"
CONNECT_TIMEOUT = 60.0  # seconds: a wrong address makes Ray wait for ever
RECONNECT = 10.0  # seconds between attempts to reach a cluster that did not answer
JOBS_PER_NODE = 1024  # jobs one node's supervisor runs at once (its threads), both pools
STOP_WAIT = 10.0  # seconds stopped jobs get to report before they are taken as stopped
STOP_FORCED = 2.0
NODES_EVERY = 5.0  # seconds between looks at which nodes the cluster has
WAIT = 0.1  # seconds one look for reports waits before it looks at new jobs too
SUPERVISOR_IDLE = 30.0  # seconds a node's supervisor stays with no job (then the node may go)
HEAD_RESOURCE = "node:__internal_head__"  # what Ray gives the head node alone


# -- what runs on the nodes ------------------------------------------------------------
class RelayLedger:
    """A node's ledger: each output is recorded by the control plane (through the relay
    actor) before the supervisor writes it."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay

    def record_output(self, source: str, key: str, job_id: str, attempt: int | None = None) -> None:
        import ray

        problem = ray.get(self.relay.record.remote(source, key, job_id, attempt), timeout=120)
        if problem:
            raise UnavailableError(f"the control plane cannot record the output {key}: {problem}")


def _same_version(version: str) -> str | None:
    if ondrop.__version__ == version:
        return None
    import ray

    return (
        f"node {ray.util.get_node_ip_address()} runs ondrop {ondrop.__version__} and the "
        f"control plane {version}: install the same version on every node"
    )


def _failed(spec: dict[str, Any], reason: str, cause: Cause) -> dict[str, Any]:
    outcome = Outcome(FAILED, None, reason, cause=cause)
    return Report(spec["job_id"], int(spec["attempt"]), outcome).to_json()


def run_task(spec: dict[str, Any], configs: Configs, relay: Any, version: str) -> dict[str, Any]:
    """A batch job, as a Ray task: the devices are the ones Ray gave it."""
    import ray

    if problem := _same_version(version):
        return _failed(spec, problem, Cause.INTERNAL)
    job = JobSpec.from_json(spec)
    devices = tuple(str(int(g)) if float(g).is_integer() else str(g) for g in ray.get_gpu_ids())
    job = replace(job, devices=devices)
    # A worker of its own, closed after: a task's Ray worker that kept one (and with it a
    # handle of the relay) would never be ended by Ray when idle.
    worker = NodeWorker(configs, RelayLedger(relay))

    def stop_when_cancelled() -> None:
        with contextlib.suppress(Exception):  # the relay is gone: the driver is too
            if ray.get(relay.wait_cancel.remote(job.job_id)):
                worker.stop(job.job_id)

    threading.Thread(target=stop_when_cancelled, daemon=True).start()
    try:
        return _on_node(worker.run(job))
    finally:
        relay.forget.remote(job.job_id)
        worker.close()


def _on_node(report: Report) -> dict[str, Any]:
    import ray

    node = ray.util.get_node_ip_address()
    return replace(report, outcome=replace(report.outcome, node=node)).to_json()


class NodeSupervisor:
    """A node's supervisor (a threaded actor pinned to its node): it runs the jobs of both
    pools there, many at once, and goes when the control plane finds it idle."""

    def __init__(self, relay: Any, version: str) -> None:
        self.problem = _same_version(version)
        self.ledger = RelayLedger(relay)
        self.workers: dict[str, Any] = {}  # job id -> the worker running it

    def run(self, spec: dict[str, Any], configs: Configs) -> dict[str, Any]:
        """Run one job with the providers as the control plane declares them now (an
        apply may have added one since the last job)."""
        if self.problem:
            return _failed(spec, self.problem, Cause.INTERNAL)
        job = JobSpec.from_json(spec)
        worker = node_worker(configs, self.ledger)
        self.workers[job.job_id] = worker
        try:
            return _on_node(worker.run(job))
        finally:
            self.workers.pop(job.job_id, None)

    def stop(self, job_id: str) -> None:
        worker = self.workers.get(job_id)
        if worker is not None:
            worker.stop(job_id)

    def close(self) -> None:
        """Before it goes: its runtimes end what they keep (spawners, warm containers)."""
        close_workers()


class LedgerRelay:
    """An async actor between the nodes' ledgers and the control plane: a node's record()
    returns once the control plane has taken the record and said done()."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[tuple[str, str, str, int | None], asyncio.Future[str]]] = {}
        self._taken: set[int] = set()
        self._next = 0
        self._new = asyncio.Event()
        self._cancels: dict[str, asyncio.Event] = {}  # running batch job -> set to stop it
        self._cancelled: set[str] = set()

    async def node(self) -> str:
        """The id of the node it lives on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def wait_cancel(self, job_id: str) -> bool:
        """Returns when the job is cancelled (True) or has ended (False)."""
        await self._cancels.setdefault(job_id, asyncio.Event()).wait()
        return job_id in self._cancelled

    async def cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)
        self._cancels.setdefault(job_id, asyncio.Event()).set()

    async def forget(self, job_id: str) -> None:
        event = self._cancels.pop(job_id, None)
        if event is not None:
            event.set()
        self._cancelled.discard(job_id)

    async def record(self, source: str, key: str, job_id: str, attempt: int | None) -> str:
        self._next += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = ((source, key, job_id, attempt), future)
        self._new.set()
        return await future  # "" once recorded, else why not

    async def take(self, timeout: float) -> list[tuple[int, str, str, str, int | None]]:
        if not any(n not in self._taken for n in self._pending):
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), timeout)
            except TimeoutError:
                return []
        fresh = [n for n in self._pending if n not in self._taken]
        self._taken.update(fresh)
        return [(n, *self._pending[n][0]) for n in fresh]

    async def done(self, numbers: list[int], problem: str = "") -> None:
        for n in numbers:
            self._taken.discard(n)
            entry = self._pending.pop(n, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(problem)


# -- the control plane's side ----------------------------------------------------------
@dataclass
class _Node:
    """A node that runs jobs, as the control plane sees it."""

    supervisor: Any = None  # its supervisor's actor; None until a job needs one
    jobs: int = 0  # handed to its supervisor and not yet reported
    made: int = 0  # supervisors made for it so far: which one runs there now
    idle_since: float = field(default_factory=time.monotonic)


class RayCluster:
    """The control plane's connection to one Ray cluster, shared by the pools that run on
    it: the driver, the ledger relay, and each node's faas supervisor."""

    def __init__(self, address: str, ledger: Ledger, configs: Callable[[], Configs]) -> None:
        self.address = address
        self.ledger = ledger
        self.configs = configs
        self._lock = threading.Lock()
        self._connected = False
        self._started = False
        self._pump_thread: threading.Thread | None = None
        self.on_connected: Callable[[], None] | None = None  # the pools may claim now
        self._problem: str | None = None
        self._stopping = threading.Event()
        self._relay: Any = None
        self._nodes: dict[str, _Node] = {}  # node id -> the live node that runs jobs
        self._ips: dict[str, str] = {}  # node id -> its address, also of nodes gone
        self._nodes_seen = 0.0
        self._task: Any = None
        self._actor: Any = None

    def start(self) -> None:
        """Join the cluster: at once when Ray runs here (no address), else in the
        background, again every RECONNECT seconds until it answers; meanwhile problem()
        says why jobs wait."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if not self.address:
            self._connect()  # Ray starts its own head only from the platform's thread
            return
        self._problem = f"connecting to the Ray cluster at {self.address}"
        threading.Thread(target=self._keep_trying, daemon=True, name="ondrop-ray").start()

    def _keep_trying(self) -> None:
        while not self._stopping.is_set() and not self._connected:
            failure: list[BaseException] = []

            def connect(failure: list[BaseException] = failure) -> None:
                try:
                    self._connect()
                except BaseException as exc:
                    failure.append(exc)

            thread = threading.Thread(target=connect, daemon=True, name="ondrop-ray-connect")
            thread.start()
            thread.join(CONNECT_TIMEOUT)  # a wrong address makes Ray wait for ever
            if self._connected:
                return
            why = f"{failure[0]}" if failure else f"no answer in {CONNECT_TIMEOUT:g} s"
            self._problem = (
                f"the Ray cluster at {self.address} cannot be reached ({why}); the jobs of the "
                "pools on it wait until it can. Check ONDROP_RAY_ADDRESS and that its head runs"
            )
            log.error("%s", self._problem)
            if thread.is_alive():
                return  # Ray's own connect goes on trying; it sets _connected when it can
            self._stopping.wait(RECONNECT)

    def _connect(self) -> None:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address=self.address or None,
            namespace=NAMESPACE,
            log_to_driver=False,
            include_dashboard=False,
            ignore_reinit_error=True,
            configure_logging=False,
        )
        self._task = ray.remote(run_task)
        self._actor = ray.remote(NodeSupervisor)
        self._relay = self._new_relay()
        self._connected = True
        self._problem = None
        self._pump_thread = threading.Thread(
            target=self._pump, daemon=True, name="ondrop-ray-ledger"
        )
        self._pump_thread.start()
        log.info("jobs run on the Ray cluster at %s", self.address or "a Ray of this machine")
        if self.on_connected is not None:
            self.on_connected()

    def _new_relay(self) -> Any:
        """The ledger relay, on the head node: a worker node may go (the autoscaler, a
        loss), the head goes only with the cluster. The driver's own node is no such
        place: on a machine that holds several nodes it is any one of them."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        heads = [
            n["NodeID"]
            for n in ray.nodes()
            if n.get("Alive") and HEAD_RESOURCE in n.get("Resources", {})
        ]
        node = heads[0] if heads else ray.get_runtime_context().get_node_id()
        return (
            ray.remote(LedgerRelay)
            .options(
                num_cpus=0,
                max_concurrency=10_000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            )
            .remote()
        )

    def problem(self) -> str | None:
        return self._problem

    def relay_node(self) -> str:
        """The id of the node the ledger relay lives on."""
        import ray

        return str(ray.get(self._relay.node.remote(), timeout=60))

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """The cluster's resources in all, and free now; none when it is not joined."""
        if not self._connected:
            return {}, {}
        import ray

        try:
            return ray.cluster_resources(), ray.available_resources()
        except Exception:
            return {}, {}

    def resources(self) -> list[dict[str, float]]:
        """The resources of each live node."""
        return [n["Resources"] for n in self._alive()]

    def nodes(self) -> list[Node]:
        """The live nodes that run jobs (a head of 0 CPUs runs none); none when the
        cluster is not joined."""
        if not self._connected:
            return []
        try:
            found = self._alive()
        except Exception:
            return []
        return [
            Node(
                str(n.get("NodeName") or n.get("NodeID", "")),
                float(n["Resources"].get("CPU", 0)),
                int(n["Resources"].get("memory", 0)),
                int(n["Resources"].get("GPU", 0)),
            )
            for n in found
            if n["Resources"].get("CPU", 0) or n["Resources"].get("GPU", 0)
        ]

    @staticmethod
    def _alive() -> list[dict[str, Any]]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def submit_task(self, spec: JobSpec) -> Any:
        resources = spec.resources
        cpu = resources.cpu if resources.cpu is not None else 1.0
        options: dict[str, Any] = {"num_cpus": cpu, "num_gpus": resources.gpus, "max_retries": 0}
        if resources.memory:
            options["memory"] = resources.memory
        return self._task.options(**options).remote(
            spec.to_json(), self.configs(), self._relay, ondrop.__version__
        )

    def stop(self, job_id: str, node: str = "") -> None:
        """Stop a job's script on its node: through the supervisor of `node`, or a batch
        task's through the relay it listens to. Its report then says stopped."""
        if not node:
            self._relay.cancel.remote(job_id)
            return
        with self._lock:
            found = self._nodes.get(node)
            supervisor = found.supervisor if found is not None else None
        if supervisor is not None:
            supervisor.stop.remote(job_id)

    def run(self, spec: JobSpec, node: str = "") -> tuple[str, int, Any]:
        """Hand a job to the supervisor of `node` (a batch job's reserved one), or of the
        node with the fewest jobs; made there now if it has none. Returns the node, which
        of its supervisors (a count) and the report to come; say ended() once it has come.
        No handle of the actor leaves here: Ray ends an actor only once none is left."""
        if node not in self._nodes:
            self._refresh_nodes(force=bool(node))  # a node may have joined since
        with self._lock:
            if not self._nodes:
                raise UnavailableError("the Ray cluster has no node that runs jobs yet")
            if node and node not in self._nodes:
                raise UnavailableError(f"the Ray node {self.node_ip(node)} has left the cluster")
            node = node or min(self._nodes, key=lambda n: self._nodes[n].jobs)
            found = self._nodes[node]
            if found.supervisor is None:
                found.supervisor = self._new_supervisor(node)
                found.made += 1
            found.jobs += 1
            ref = found.supervisor.run.remote(spec.to_json(), self.configs())
            return node, found.made, ref

    def ended(self, node: str, lost: int = 0) -> None:
        """A job of `node`'s supervisor has reported; `lost`: which supervisor it ran on,
        lost with it (made again if the node lives; one made since stays)."""
        with self._lock:
            found = self._nodes.get(node)
            if found is None:
                return
            found.jobs = max(found.jobs - 1, 0)
            found.idle_since = time.monotonic()
            if lost and lost == found.made:
                found.supervisor = None
                self._nodes_seen = 0.0

    def _new_supervisor(self, node: str) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return self._actor.options(
            num_cpus=0,
            max_concurrency=JOBS_PER_NODE,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(self._relay, ondrop.__version__)

    def _let_idle_go(self) -> None:
        """End the supervisors that ran nothing for SUPERVISOR_IDLE: Ray's autoscaler takes
        a node with an actor on it for busy, and would never let it go."""
        now = time.monotonic()
        with self._lock:
            for found in self._nodes.values():
                idle = now - found.idle_since > SUPERVISOR_IDLE
                if found.supervisor is not None and found.jobs == 0 and idle:
                    found.supervisor.close.remote()  # Ray ends it once this returns
                    found.supervisor = None

    def reserve(self, spec: JobSpec) -> Any:
        """A placement group holding a batch job's cpu and memory on one node."""
        from ray.util.placement_group import placement_group

        resources = spec.resources
        bundle = {"CPU": resources.cpu if resources.cpu is not None else 1.0}
        if resources.memory:
            bundle["memory"] = float(resources.memory)
        return placement_group([bundle], strategy="STRICT_PACK")

    @staticmethod
    def reserved_on(reservation: Any) -> str:
        """The node a ready reservation holds its resources on."""
        from ray.util.placement_group import placement_group_table

        return str(placement_group_table(reservation)["bundles_to_node_id"][0])

    @staticmethod
    def release(reservation: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        with contextlib.suppress(Exception):  # gone with the cluster, or removed already
            remove_placement_group(reservation)

    def node_ip(self, node: str) -> str:
        return self._ips.get(node, node)

    def _refresh_nodes(self, force: bool = False) -> None:
        import ray

        if not force and time.monotonic() - self._nodes_seen < NODES_EVERY:
            return
        alive = {
            n["NodeID"]: n
            for n in ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0
        }
        with self._lock:
            self._nodes_seen = time.monotonic()
            for gone in set(self._nodes) - set(alive):
                del self._nodes[gone]
            for node, info in alive.items():
                self._ips[node] = info.get("NodeManagerAddress", node)
                self._nodes.setdefault(node, _Node())

    def _pump(self) -> None:
        """Take the nodes' output records to the store, and tell them it is done."""
        import ray

        while not self._stopping.is_set():
            self._let_idle_go()
            try:
                taken = ray.get(self._relay.take.remote(1.0), timeout=60)
            except ray.exceptions.RayActorError as exc:
                if self._stopping.is_set():
                    return
                # Its node was lost: the records it held are the running jobs' own, and
                # those jobs end as lost. The next ones go through a new relay.
                log.warning("the Ray ledger relay was lost (%s); making a new one", exc)
                with self._lock:
                    self._relay = self._new_relay()
                    for found in self._nodes.values():
                        found.supervisor = None  # they hold the old one
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("the Ray ledger relay does not answer (%s); trying again", exc)
                self._stopping.wait(1.0)
                continue
            done, problems = [], []
            for number, source, key, job_id, attempt in taken:
                try:
                    self.ledger.record_output(source, key, job_id, attempt)
                    done.append(number)
                except Exception as exc:
                    log.warning("job %s: cannot record its output %s: %s", job_id, key, exc)
                    problems.append((number, str(exc)))
            try:
                if done:
                    self._relay.done.remote(done)
                for number, problem in problems:
                    self._relay.done.remote([number], problem)
            except Exception as exc:  # Ray is going away; the nodes' records time out
                if self._stopping.is_set():
                    return
                log.warning("cannot answer the nodes' output records: %s", exc)

    def close(self) -> None:
        self._stopping.set()
        if self._pump_thread is not None:
            self._pump_thread.join(5)  # its take() returns within a second
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False


@dataclass
class _Running:
    spec: JobSpec  # as it was sent
    ref: Any  # its report to come; a reserving batch job's: the reservation ready
    node: str = ""  # the id of the node whose supervisor runs it; "" for a task
    supervisor: int = 0  # which of that node's supervisors (RayCluster.run)
    reservation: Any = None  # a batch job's placement group, released when it ends

    @property
    def placed(self) -> bool:
        """False while a batch job waits for its reservation (no node runs it yet)."""
        return self.reservation is None or bool(self.node)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, pool: str, cluster: RayCluster, transit: Transit) -> None:
        self.pool = pool
        self.cluster = cluster
        self.transit = transit
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}  # job id -> its attempt on the cluster
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._wait, name=f"ondrop-ray-{pool}", daemon=True)

    def start(self, listener: Listener) -> None:
        self._listener = listener
        self.cluster.start()
        self._thread.start()

    def problem(self) -> str | None:
        return self.cluster.problem()

    def submit(self, spec: JobSpec) -> str:
        if (problem := self.cluster.problem()) is not None:
            raise UnavailableError(problem)
        spec = self.transit.send(spec)
        if self.pool == "faas":
            node, made, ref = self.cluster.run(spec)
            running = _Running(spec, ref, node, supervisor=made)
        elif spec.resources.gpus:
            running = _Running(spec, self.cluster.submit_task(spec))
        else:
            reservation = self.cluster.reserve(spec)
            running = _Running(spec, reservation.ready(), reservation=reservation)
        with self._lock:
            self._running[spec.job_id] = running
        self._wake.set()
        return running.ref.hex()  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> None:
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return
            if not running.placed:  # nothing runs yet: give its reservation back
                del self._running[job_id]
        if not running.placed:
            self.cluster.release(running.reservation)
            self._tell(self._ended(running, "stopped by the platform", Cause.STOPPED))
            return
        self.cluster.stop(job_id, running.node)

    def _place(self, running: _Running) -> None:
        """A batch job's reservation is ready: the supervisor of its node runs it."""
        job_id = running.spec.job_id
        try:
            node = self.cluster.reserved_on(running.reservation)
            with self._lock:
                if self._running.get(job_id) is not running:
                    return  # cancelled meanwhile; its reservation is given back
                _, running.supervisor, running.ref = self.cluster.run(running.spec, node)
                running.node = node  # placed, now that it has its report to come
        except Exception as exc:
            with self._lock:
                if self._running.get(job_id) is not running:
                    return
                del self._running[job_id]
            self.cluster.release(running.reservation)
            reason = f"its node left the cluster before it started ({exc}); it runs again"
            self._tell(self._ended(running, reason, Cause.LOST))

    def _tell(self, report: Report) -> None:
        assert self._listener is not None
        self._listener.ended(report)

    def stop_all(self, force: bool = False) -> None:
        """Stop every job (the platform stops): their scripts are told to stop; what has
        not reported after a moment (a task still waiting for a node never will) ends
        stopped here, to run again on the next start."""
        with self._lock:
            jobs = list(self._running)
        for job_id in jobs:
            self.cancel(job_id)
        deadline = time.monotonic() + (STOP_FORCED if force else STOP_WAIT)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.1)
        with self._lock:
            left = list(self._running.values())
            self._running.clear()
        reason = "the platform stopped; the job runs again on its next start"
        for running in left:
            if running.reservation is not None:
                self.cluster.release(running.reservation)
            if running.node:
                self.cluster.ended(running.node)
            self._tell(self._ended(running, reason, Cause.STOPPED))

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _wait(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._look():
                    self._wake.wait(1.0)
                    self._wake.clear()
            except Exception:
                log.exception("waiting on the Ray cluster failed")
                self._stopping.wait(1.0)

    def _look(self) -> bool:
        """Take the reports that are ready (waiting up to WAIT for one); False when no job
        runs. A method of its own, so that nothing of an ended job (a handle Ray counts
        before it ends an actor) stays referenced while the thread is idle."""
        import ray

        with self._lock:
            refs = {r.ref: r for r in self._running.values()}
        if not refs:
            return False
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT)
        if ready:  # and every other that is ready too
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            self._ready(refs[ref])
        return True

    def _ready(self, running: _Running) -> None:
        if running.placed:
            self._report(running)
        else:
            self._place(running)

    def _report(self, running: _Running) -> None:
        import ray
        import ray.exceptions as errors

        if running.reservation is not None:
            self.cluster.release(running.reservation)
        lost = False
        try:
            report = Report.from_json(ray.get(running.ref))
        except errors.TaskCancelledError:
            report = self._ended(running, "stopped by the platform", Cause.STOPPED)
        except (
            errors.NodeDiedError,
            errors.WorkerCrashedError,
            errors.RayActorError,
            errors.ObjectLostError,
            errors.OwnerDiedError,
            errors.LocalRayletDiedError,
            errors.OutOfMemoryError,
        ) as exc:
            where = self.cluster.node_ip(running.node) if running.node else "its node"
            lost = True
            reason = f"lost on the cluster ({type(exc).__name__}: {where}); it runs again"
            report = self._ended(running, reason, Cause.LOST)
        except Exception as exc:
            log.warning("job %s: the cluster failed it: %r", running.spec.job_id, exc)
            report = self._ended(running, f"internal error on the cluster: {exc}", Cause.INTERNAL)
        try:
            self.transit.receive(running.spec, report.outcome.status == SUCCEEDED)
        except Exception as exc:
            log.warning("job %s: its results did not come back: %s", report.job_id, exc)
            outcome = Outcome(
                FAILED,
                0,
                f"its results did not come back: {exc}",
                report.outcome.log,
                Cause.UNAVAILABLE,
            )
            report = Report(report.job_id, report.attempt, outcome, report.outputs)
        with self._lock:
            if self._running.get(running.spec.job_id) is not running:
                return  # taken as stopped already (stop_all)
            self._running.pop(running.spec.job_id, None)
        if running.node:
            self.cluster.ended(running.node, running.supervisor if lost else 0)
        self._tell(report)

    @staticmethod
    def _ended(running: _Running, reason: str, cause: Cause) -> Report:
        status = INTERRUPTED if cause in (Cause.STOPPED, Cause.LOST) else FAILED
        spec = running.spec
        return Report(spec.job_id, spec.attempt, Outcome(status, None, reason, cause=cause))


class ClusterBatch(Admission):
    """The batch pool's admission on a cluster: Ray places each job where its resources
    are free (and its autoscaler adds nodes), so the pool only bounds how many jobs it has
    handed over at once."""

    name = "batch"

    def __init__(self, cluster: RayCluster, in_flight: int = 10_000) -> None:
        self.cluster = cluster
        self.in_flight = in_flight
        self._running = 0
        self._lock = threading.Lock()

    def slots(self) -> int:
        with self._lock:
            return self.in_flight - self._running

    def admit(self, job: Job, service: Service) -> Allocation | None:
        with self._lock:
            if self._running >= self.in_flight:
                return None
            self._running += 1
        return Allocation(
            float(service.timeout or BATCH_TIMEOUT),
            service.memory_bytes,
            parse_cpu(service.cpu) if service.cpu else None,
            gpu_count=self.gpus_for(service),
        )

    def gpus_for(self, service: Service) -> int:
        """The GPUs a job of `service` asks Ray for: a `gpu_optional` one runs on the CPU
        when no node of the cluster has a GPU (else it would wait for ever)."""
        if not service.gpu or not service.gpu_optional:
            return service.gpu
        total, _ = self.cluster.totals()
        return service.gpu if total.get("GPU", 0) >= service.gpu else 0

    def release(self, allocation: Allocation) -> None:
        with self._lock:
            self._running -= 1

    def refuse(self, service: Service) -> str | None:
        return None  # a node that fits may join later (the autoscaler); see fits()

    def fits(self, service: Service) -> str | None:
        """Why no node of the cluster now could run `service`'s jobs (they wait until one
        joins), or None."""
        try:
            nodes = self.cluster.resources()
        except Exception:
            return None
        cpu = parse_cpu(service.cpu) if service.cpu else 1.0
        memory = service.memory_bytes or DEFAULT_MEMORY
        gpus = 0 if service.gpu_optional else service.gpu
        for node in nodes:
            if (
                node.get("CPU", 0) >= cpu
                and node.get("GPU", 0) >= gpus
                and node.get("memory", memory) >= memory
            ):
                return None
        return (
            f"no node of the Ray cluster has {cpu:g} CPUs, {gpus} GPUs and this "
            "much memory free now: its jobs wait until the autoscaler (or you) adds one"
        )

    def nodes(self) -> list[Node]:
        return self.cluster.nodes()

    def describe(self) -> dict[str, Any]:
        """As the local batch pool describes itself, for the cluster's resources."""
        with self._lock:
            running = self._running
        total, free = self.cluster.totals()
        return {
            "cpus": total.get("CPU", 0.0),
            "free_cpus": round(free.get("CPU", 0.0), 3),
            "memory": format_bytes(int(total.get("memory", 0))),
            "free_memory": format_bytes(int(free.get("memory", 0))),
            "gpus": [str(i) for i in range(int(total.get("GPU", 0)))],
            "free_gpus": [str(i) for i in range(int(free.get("GPU", 0)))],
            "running": running,
        }
