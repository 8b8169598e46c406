"""Exposed services (OSCAR's `expose`): containers of a service's image that serve HTTP
themselves, kept running and reached through the API at /system/services/<name>/exposed/.

Each replica is a container in a network namespace of its own, holding a loopback device
and nothing else: no other replica, job or host process can reach its server, and
replicas never fight over a port. The platform reaches one through a socket made in that
namespace (setns on a thread of its own), so the API's proxy (api/routes/exposed.py) is
the only way in, and `set_auth` is kept there.

A thread keeps each exposed service's replicas as its FDL asks, the way Kubernetes keeps
OSCAR's: started at apply (min_scale); a new replica gets traffic once its health path
answers below 400; a replica whose server dies, or fails three checks in a row, is
replaced (with a growing pause, up to a minute, while new ones keep dying before they are
ever up); every SCALE_EVERY seconds the CPU its ready replicas used sets how many there
should be, as Kubernetes' autoscaler does (ceil(replicas x use / cpu_threshold), within
min_scale and max_scale, a 10% tolerance, and a fall only when asked for over the last
SCALE_DOWN_AFTER seconds). A changed service (or `restart`) gets new replicas, and the
old ones are stopped once as many new ones are up. `stop` keeps none (remembered in the
store, across restarts) until `start`. The platform's shutdown and `rm` stop them all.

Each control plane runs its own replicas of every exposed service, and its proxy sends
requests to its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ondrop.errors import BadRequestError, NotFoundError, OndropError, UnavailableError
from ondrop.fdl.models import Expose, Service
from ondrop.quantity import parse_cpu
from ondrop.runtime.base import RunSpec, Runtime, Served
from ondrop.runtime.cgroups import cpu_seconds
from ondrop.services import Services
from ondrop.store.base import Store

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at every replica
STARTING_TICK = 0.2  # ... while one is starting: its health is asked this often
HEALTH_EVERY = 10.0  # seconds between the health checks of a replica that is up
FAILURES = 3  # failed checks in a row that have a replica replaced
START_WITHIN = 300.0  # seconds a new replica has to answer its first check
CHECK_TIMEOUT = 2.0  # seconds a health check waits for the answer
SCALE_EVERY = 15.0  # seconds between scaling decisions (Kubernetes' autoscaler's period)
SCALE_DOWN_AFTER = 300.0  # a lower count must be asked for this long to be taken
TOLERANCE = 0.1  # use within this ratio of the threshold changes nothing
BACKOFF_MAX = 60.0  # the longest pause before another replica, while they keep dying
REQUESTS_KEPT = 10_000  # requests remembered for /system/metrics, this control plane's
STOP_GRACE = 10.0  # seconds a replica has for the requests it serves, then to exit
LOG_LINES = 200  # lines of a replica's output kept when it ends
STOPPED = "exposed.stopped."  # store key, + the service's name: "1" while it is stopped
CLONE_NEWNET = 0x40000000


def base_path(name: str) -> str:
    """Where an exposed service is reached (OSCAR_SERVICE_BASE_PATH)."""
    return f"/system/services/{name}/exposed"


def health_path(name: str, expose: Expose) -> str:
    """The path a replica's health is asked at, as its server sees it (OSCAR's)."""
    if expose.rewrite_target and expose.probe_mode == "legacy":
        return base_path(name) + expose.health_path
    return expose.health_path


def desired(current: int, uses: list[float], threshold: int) -> int:
    """Kubernetes' autoscaler: the replicas that bring the mean CPU use of `current`
    (each a fraction of its share) to `threshold` percent; `current` within the
    tolerance."""
    if current == 0 or not uses:
        return current
    ratio = (sum(uses) / len(uses)) / (threshold / 100)
    if abs(ratio - 1) <= TOLERANCE:
        return current
    return max(1, math.ceil(current * ratio))


def _version(service: Service, generation: int) -> str:
    """What its replicas run: a change of any of it (or a restart) asks for new ones."""
    made = service.model_dump(
        include={"image", "script", "environment", "expose", "cpu", "memory", "runtime"}
    )
    made["generation"] = generation
    return hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(eq=False)
class Replica:
    id: str
    version: str
    port: int
    state: str = "creating"  # creating, starting, ready, stopping
    served: Served | None = None
    netns: int = -1  # an open file of its network namespace
    since: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    checked: float = 0.0  # when its health was last asked (monotonic)
    failures: int = 0  # failed checks in a row
    cpu: tuple[float, float] | None = None  # (monotonic time, CPU seconds) at the last look
    in_flight: int = 0  # requests the proxy has on it now
    problem: str = ""  # why it is not up

    def shown(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "since": self.since,
            **({"reason": self.problem} if self.problem else {}),
        }


@dataclass(eq=False)
class Deployment:
    name: str
    target: int  # replicas wanted now
    stopped: bool = False
    generation: int = 0  # bumped by restart
    replicas: list[Replica] = field(default_factory=list)
    crashes: int = 0  # replicas that ended before they were ever up, in a row
    retry_at: float = 0.0  # no new replica before this (monotonic)
    scaled: float = field(default_factory=time.monotonic)  # the last scaling look
    asked: deque[tuple[float, int]] = field(default_factory=deque)  # counts asked for
    restarts: int = 0  # replicas replaced since the platform started
    ended_log: str = ""  # what the last replica to end printed
    problem: str = ""  # why replicas cannot be had (no image here...)
    turn: int = 0
    decided: float = 0.0  # when stop() or start_again() here last said (monotonic)


class Exposed:
    """Every exposed service's replicas on this control plane."""

    def __init__(
        self,
        services: Services,
        runtime_for: Callable[[Service], Runtime | str],
        folder: Path,
        store: Store,
    ) -> None:
        self.services = services
        self.runtime_for = runtime_for
        self.folder = folder  # replicas' folders: among the jobs' work folders
        self.store = store
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the keeper looks again
        self._drained = threading.Condition(self._lock)  # a stopping replica serves no more
        self._thread: threading.Thread | None = None
        self._closed = False
        self._workers: set[threading.Thread] = set()
        self._meta_read = 0.0
        # (epoch time, service) of the requests passed on, the last REQUESTS_KEPT
        self.requests: deque[tuple[float, str]] = deque(maxlen=REQUESTS_KEPT)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ondrop-exposed", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the services now (one was applied or removed)."""
        with self._lock:
            self._wake.notify()

    def close(self) -> None:
        """Stop every replica (shutdown)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._drained.notify_all()
            for dep in self._deployments.values():
                for replica in dep.replicas:
                    self._retire(replica)  # one being made is stopped by its maker
                dep.replicas.clear()
        if self._thread is not None:
            self._thread.join(timeout=60)
        deadline = time.monotonic() + STOP_GRACE + 60
        while self._workers and time.monotonic() < deadline:
            for worker in list(self._workers):
                worker.join(timeout=max(0.0, deadline - time.monotonic()))

    def stop(self, name: str) -> None:
        """Keep no replica of `name` until start()."""
        self._exposed(name)
        self.store.set_meta(STOPPED + name, "1")
        with self._lock:
            dep = self._deployments.setdefault(name, Deployment(name, 0))
            dep.stopped, dep.decided = True, time.monotonic()
            self._wake.notify()

    def start_again(self, name: str) -> None:
        """Undo stop(): min_scale replicas again."""
        service = self._exposed(name)
        self.store.set_meta(STOPPED + name, "")
        with self._lock:
            if (dep := self._deployments.get(name)) is not None and dep.stopped:
                dep.stopped, dep.decided = False, time.monotonic()
                assert service.expose is not None
                dep.target = service.expose.min_scale
                dep.crashes, dep.retry_at = 0, 0.0
            self._wake.notify()

    def restart(self, name: str) -> None:
        """New replicas for all of `name`'s; the old ones stop once the new ones are up."""
        self._exposed(name)
        with self._lock:
            if (dep := self._deployments.get(name)) is not None:
                dep.generation += 1
                dep.crashes, dep.retry_at = 0, 0.0
            self._wake.notify()

    def forget(self, name: str) -> None:
        """`name` was removed: its replicas stop, and a service of that name made later
        starts out as any other, not stopped."""
        self.store.set_meta(STOPPED + name, "")
        self.wake()

    def _exposed(self, name: str) -> Service:
        service = self.services.get(name)
        if service.expose is None:
            raise BadRequestError(f"service {name!r} is not exposed (it has no `expose`)")
        return service

    # -- the proxy's side ---------------------------------------------------------------
    def pick(self, name: str) -> Replica:
        """A replica of `name` that is up, the one with fewest requests on it (taking
        turns); release() it when its request is done."""
        service = self._exposed(name)
        with self._lock:
            dep = self._deployments.get(name)
            if dep is not None and dep.stopped:
                raise UnavailableError(
                    f"exposed service {name!r} is stopped: "
                    f"POST /system/services/{name}/start starts it"
                )
            if dep is None or not (up := [r for r in dep.replicas if r.state == "ready"]):
                raise UnavailableError(self._why_none(name, dep, service))
            current = _version(service, dep.generation)
            up = [r for r in up if r.version == current] or up
            dep.turn += 1
            least = min(r.in_flight for r in up)
            fewest = [r for r in up if r.in_flight == least]
            replica = fewest[dep.turn % len(fewest)]
            replica.in_flight += 1
            self.requests.append((time.time(), name))
            return replica

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.in_flight -= 1
            if replica.in_flight == 0 and replica.state == "stopping":
                self._drained.notify_all()

    def socket(self, replica: Replica) -> socket.socket:
        """A TCP socket in the replica's network namespace, not yet connected."""
        with self._lock:  # its namespace's file is closed under the lock, once stopped
            if replica.netns < 0:
                raise OSError(f"replica {replica.id} is stopped")
            netns = os.dup(replica.netns)
        try:
            return socket_in(netns)
        finally:
            os.close(netns)

    def _why_none(self, name: str, dep: Deployment | None, service: Service) -> str:
        if dep is None:
            return f"exposed service {name!r} has no replica yet; try again in a moment"
        if dep.problem:
            return f"exposed service {name!r} has no replica up: {dep.problem}"
        starting = [r for r in dep.replicas if r.state in ("creating", "starting")]
        if starting and service.expose is not None:
            return (
                f"exposed service {name!r} has no replica up yet ({len(starting)} starting: "
                f"waiting for {health_path(name, service.expose)} to answer); try again in a "
                "moment"
            )
        return f"exposed service {name!r} has no replica up; its log says why"

    # -- what is shown --------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        """The deployment's state (OSCAR's shape, with its replicas beside)."""
        service = self._exposed(name)
        assert service.expose is not None
        with self._lock:
            dep = self._deployments.get(name)
            replicas = [r.shown() for r in dep.replicas] if dep is not None else []
            up = sum(1 for r in replicas if r["state"] == "ready")
            stopped = dep is not None and dep.stopped
            answer: dict[str, Any] = {
                "state": "stopped"
                if stopped
                else "ready"
                if up
                else "degraded"
                if dep is not None and (dep.problem or dep.crashes)
                else "starting",
                "active_instances": up,
                "affected_instances": len(replicas) - up,
                "resource_kind": "deployment",
                "desired_instances": 0 if dep is None or stopped else dep.target,
                "min_scale": service.expose.min_scale,
                "max_scale": service.expose.max_scale,
                "restarts": dep.restarts if dep is not None else 0,
                "replicas": replicas,
            }
            if dep is not None and (dep.problem or (dep.crashes and not up)):
                answer["reason"] = dep.problem or (
                    f"{dep.crashes} replica(s) in a row ended before they were up; "
                    "the deployment's log says why"
                )
        return answer

    def log(self, name: str, lines: int) -> tuple[str, str]:
        """(what, text): the output of the newest replica, or of the last one that ended."""
        self._exposed(name)
        with self._lock:
            dep = self._deployments.get(name)
            live = [r for r in dep.replicas if r.served is not None] if dep else []
            newest = max(live, key=lambda r: r.started, default=None)
            ended = dep.ended_log if dep is not None else ""
        if newest is not None and newest.served is not None:
            return f"the output of replica {newest.id}", newest.served.log(lines)
        if ended:
            return "the output of the last replica that ended", ended
        return "no replica has run yet", ""

    # -- keeping the replicas --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            try:
                self._reconcile()
            except Exception:  # one bad look must not end the thread
                log.exception("exposed services: could not look after the replicas")
            with self._lock:
                if self._closed:
                    return
                starting = any(
                    r.state == "starting" for d in self._deployments.values() for r in d.replicas
                )
                self._wake.wait(STARTING_TICK if starting else TICK)

    def _reconcile(self) -> None:
        wanted = {s.name: s for s in self.services.all() if s.expose is not None}
        now = time.monotonic()
        read_meta = now - self._meta_read >= SCALE_EVERY
        if read_meta:
            self._meta_read = now
        stopped = {
            name: self.store.get_meta(STOPPED + name) == "1"
            for name in wanted
            if read_meta or name not in self._deployments
        }
        checks: list[tuple[Service, Replica]] = []
        with self._lock:
            if self._closed:  # (close() stopped every replica meanwhile)
                return
            for name in list(self._deployments):
                if name not in wanted:  # removed
                    for replica in self._deployments.pop(name).replicas:
                        self._retire(replica)
            for name, service in wanted.items():
                assert service.expose is not None
                dep = self._deployments.get(name)
                if dep is None:
                    dep = Deployment(name, service.expose.min_scale)
                    self._deployments[name] = dep
                if name in stopped and dep.decided < now:  # not older than stop()/start
                    dep.stopped = stopped[name]
                expose = service.expose
                dep.target = min(max(dep.target, expose.min_scale), expose.max_scale)
                self._look(dep, service, now, checks)
        for service, replica in checks:  # outside the lock: each may take a while
            self._check(service, replica)

    def _look(
        self, dep: Deployment, service: Service, now: float, checks: list[tuple[Service, Replica]]
    ) -> None:
        """One look at a deployment (under the lock): the ended replaced, health checks
        due, scaling, replicas started and stopped to match."""
        assert service.expose is not None
        for replica in list(dep.replicas):
            if replica.served is not None and not replica.served.alive():
                self._ended(dep, replica, "its server exited")
            elif replica.state == "starting" and now - replica.started > START_WITHIN:
                self._ended(
                    dep,
                    replica,
                    f"{health_path(dep.name, service.expose)} did not answer within "
                    f"{START_WITHIN:g} s",
                )
            elif replica.state == "starting" or (
                replica.state == "ready" and now - replica.checked >= HEALTH_EVERY
            ):
                replica.checked = now
                checks.append((service, replica))
        if dep.stopped:
            for replica in list(dep.replicas):
                self._retire(replica)
            dep.replicas = []
            return
        if now - dep.scaled >= SCALE_EVERY:
            dep.scaled = now
            self._scale(dep, service, now)
        current = _version(service, dep.generation)
        ours = [r for r in dep.replicas if r.version == current]
        old = [r for r in dep.replicas if r.version != current]
        missing = dep.target - len(ours)
        if missing > 0 and now >= dep.retry_at:
            for _ in range(missing):
                replica = Replica(
                    f"{dep.name}-{uuid.uuid4().hex[:8]}", current, service.expose.api_port
                )
                dep.replicas.append(replica)
                self._in_worker(self._create, dep, service, replica)
        elif missing < 0:  # the ones not up first, then the newest
            for replica in sorted(ours, key=lambda r: (r.state == "ready", -r.started))[:-missing]:
                self._remove(dep, replica)
        up = sum(1 for r in ours if r.state == "ready")
        for replica in old:  # once as many new ones are up, or when it serves nothing
            if up >= dep.target or replica.state != "ready":
                self._remove(dep, replica)

    def _scale(self, dep: Deployment, service: Service, now: float) -> None:
        expose = service.expose
        assert expose is not None
        share = parse_cpu(service.cpu) if service.cpu else 1.0
        uses: list[float] = []
        looked = [r for r in dep.replicas if r.state == "ready" and r.served is not None]
        for replica in looked:
            assert replica.served is not None
            used = cpu_seconds(replica.served.pid)
            if used is None:
                continue
            if replica.cpu is not None and now > replica.cpu[0]:
                uses.append((used - replica.cpu[1]) / ((now - replica.cpu[0]) * share))
            replica.cpu = (now, used)
        if not uses or len(uses) < len(looked):
            return  # a replica new since the last look: its use is not known yet
        asked = desired(len(looked), uses, expose.cpu_threshold)
        asked = min(max(asked, expose.min_scale), expose.max_scale)
        dep.asked.append((now, asked))
        while dep.asked and now - dep.asked[0][0] > SCALE_DOWN_AFTER:
            dep.asked.popleft()
        if asked > dep.target:
            log.info(
                "exposed service %s: %d replica(s) at %.0f%% CPU: scaling to %d",
                dep.name,
                len(looked),
                100 * sum(uses) / len(uses),
                asked,
            )
            dep.target = asked
        elif asked < dep.target:
            lower = max(n for _, n in dep.asked)
            if lower < dep.target:
                log.info("exposed service %s: scaling down to %d", dep.name, lower)
                dep.target = lower

    def _ended(self, dep: Deployment, replica: Replica, why: str) -> None:
        """A replica died or never came up (under the lock): replaced at the next look."""
        was_up = replica.state == "ready"
        dep.restarts += 1
        if was_up:
            dep.crashes, dep.retry_at = 0, 0.0
        else:
            dep.crashes += 1
            dep.retry_at = time.monotonic() + min(2.0**dep.crashes, BACKOFF_MAX)
        log.warning(
            "exposed service %s: replica %s ended (%s); another is started%s",
            dep.name,
            replica.id,
            why,
            "" if was_up else f" in {min(2.0**dep.crashes, BACKOFF_MAX):g} s",
        )
        with contextlib.suppress(ValueError):
            dep.replicas.remove(replica)
        replica.state = "stopping"
        self._in_worker(self._stop, replica, dep, why)  # its log kept first

    def _remove(self, dep: Deployment, replica: Replica) -> None:
        with contextlib.suppress(ValueError):
            dep.replicas.remove(replica)
        self._retire(replica)

    def _retire(self, replica: Replica) -> None:
        """Stop the replica in the background (under the lock)."""
        if replica.state == "stopping":
            return
        creating = replica.state == "creating"
        replica.state = "stopping"
        if not creating:  # else its creator stops it once it exists
            self._in_worker(self._stop, replica)

    def _in_worker(self, work: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                work(*args)
            except Exception:
                log.exception("exposed services: %s failed", work.__name__)
            finally:
                self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=run, name="ondrop-exposed-replica", daemon=True)
        self._workers.add(worker)
        worker.start()

    def _create(self, dep: Deployment, service: Service, replica: Replica) -> None:
        assert service.expose is not None
        served: Served | None = None
        problem = ""
        waits = False
        runtime = self.runtime_for(service)
        if isinstance(runtime, str):
            problem, waits = runtime, True
        else:
            folder = self.folder / f"exposed-{replica.id}"
            try:
                folder.mkdir(parents=True)
                (folder / "tmp").mkdir()
                script = "" if service.expose.default_command else service.script
                (folder / "script").write_text(script)
                served = runtime.serve(self._spec(service, replica, folder))
                replica.netns = os.open(f"/proc/{served.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                if os.fstat(replica.netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
                    # (an engine that reported another process, or none of its own)
                    raise OndropError(
                        f"replica {replica.id} is not in a network of its own; it is stopped"
                    )
            except NotFoundError as exc:
                problem, waits = f"{exc}; its replicas wait until it is here", True
            except (OndropError, OSError) as exc:
                problem = str(exc)
            if problem and replica.netns >= 0:
                os.close(replica.netns)
                replica.netns = -1
            if problem and served is not None:
                served.stop(0)
                served = None
            if served is None:
                shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            if served is None:
                dep.problem = problem
                with contextlib.suppress(ValueError):
                    dep.replicas.remove(replica)
                if waits:  # not the replica's fault: look again in a while
                    dep.retry_at = time.monotonic() + SCALE_EVERY
                else:
                    dep.crashes += 1
                    dep.retry_at = time.monotonic() + min(2.0**dep.crashes, BACKOFF_MAX)
                    log.error("exposed service %s: no replica: %s", dep.name, problem)
                return
            dep.problem = ""
            replica.served = served
            replica.started = time.monotonic()
            if replica.state == "stopping" or self._closed:  # retired while being made
                replica.state = "stopping"
                self._in_worker(self._stop, replica)
                return
            replica.state = "starting"
            self._wake.notify()
        log.debug("exposed service %s: replica %s started", dep.name, replica.id)

    def _spec(self, service: Service, replica: Replica, folder: Path) -> RunSpec:
        env = dict(service.environment.variables)
        env.update(service.environment.secrets)
        env.update(
            OSCAR_SERVICE_NAME=service.name,
            OSCAR_SERVICE_BASE_PATH=base_path(service.name),
            TMPDIR="/tmp",
        )
        return RunSpec(
            job_id=f"exposed-{replica.id}",
            script=folder / "script",
            workdir=folder,
            env=env,
            timeout=0.0,
            log=folder / "log",
            image=service.image,
            memory=service.memory_bytes,
            cpu=parse_cpu(service.cpu) if service.cpu else None,
            service=service.name,
        )

    def _stop(self, replica: Replica, ended: Deployment | None = None, why: str = "") -> None:
        """Stop the replica, once the requests on it are done (or had STOP_GRACE); one
        that `ended` by itself has its last output kept as its deployment's."""
        try:
            if ended is not None and replica.served is not None:
                text = replica.served.log(LOG_LINES).rstrip()
                with self._lock:
                    ended.ended_log = f"{text}\n[ondrop] replica {replica.id} ended: {why}\n"
            deadline = time.monotonic() + STOP_GRACE
            with self._lock:  # the requests it serves have the grace to end
                while replica.in_flight > 0 and not self._closed:
                    if not self._drained.wait(max(0.0, deadline - time.monotonic())):
                        break
            if replica.served is not None:
                replica.served.stop(STOP_GRACE)
        finally:
            with self._lock:  # (socket() makes its copy under the lock)
                if replica.netns >= 0:
                    os.close(replica.netns)
                    replica.netns = -1

    def _check(self, service: Service, replica: Replica) -> None:
        """Ask the replica's health path; up when it answers below 400."""
        assert service.expose is not None
        path = health_path(service.name, service.expose)
        problem = ""
        try:
            with self.socket(replica) as sock:
                sock.settimeout(CHECK_TIMEOUT)
                sock.connect(("127.0.0.1", replica.port))
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ondrop-health\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                first = sock.recv(256).split(b"\r\n", 1)[0].decode("latin-1")
            parts = first.split(" ")
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not 200 <= code < 400:
                problem = f"{path} answered {first!r}"
        except OSError as exc:
            problem = f"{path} on port {replica.port}: {exc.strerror or exc}"
        with self._lock:
            if replica.state == "stopping":
                return
            if not problem:
                if replica.state != "ready":
                    log.info("exposed service %s: replica %s is up", service.name, replica.id)
                replica.state, replica.failures, replica.problem = "ready", 0, ""
                dep = self._deployments.get(service.name)
                if dep is not None:
                    dep.crashes = 0
                return
            replica.problem = problem
            if replica.state == "ready":
                replica.failures += 1
                if replica.failures >= FAILURES:
                    dep = self._deployments.get(service.name)
                    if dep is not None:
                        self._ended(dep, replica, f"{FAILURES} health checks failed: {problem}")


_netns_thread: ThreadPoolExecutor | None = None
_netns_lock = threading.Lock()


def socket_in(netns: int) -> socket.socket:
    """A TCP socket of the network namespace `netns` (an open file of it). A socket stays
    in the namespace it was made in: a thread of its own enters the namespace to make it,
    and does nothing else."""
    global _netns_thread
    with _netns_lock:
        if _netns_thread is None:
            _netns_thread = ThreadPoolExecutor(1, thread_name_prefix="ondrop-netns")
        made = _netns_thread.submit(_made_in, netns)
    return made.result()


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _made_in(netns: int) -> socket.socket:
    setns = getattr(os, "setns", None)
    libc = _libc() if setns is None else None
    if setns is not None:  # Python 3.12
        setns(netns, CLONE_NEWNET)
    else:
        assert libc is not None
        if libc.setns(netns, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(
                errno,
                f"cannot enter the replica's network ({os.strerror(errno)}): reaching exposed "
                "services needs the platform to run as root",
            )
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
