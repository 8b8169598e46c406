"""The platform: the parts wired together, as `ondrop up` runs them.

watcher / upload / invocation / chained output
    -> intake (store: event + jobs) -> pool -> supervisor (stage in, runtime, stage out)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ondrop.backends.base import Backend

if TYPE_CHECKING:
    from ondrop.backends.ray import RayCluster
from ondrop.backends.local import LocalBackend
from ondrop.backends.transit import Transit
from ondrop.buckets import Buckets
from ondrop.errors import (
    ConflictError,
    DefinitionError,
    NotFoundError,
    OndropError,
    UnavailableError,
)
from ondrop.events import inotify
from ondrop.events.base import EventSource
from ondrop.events.changes import ChangesStream
from ondrop.events.payloads import Payloads
from ondrop.events.poll import Poller
from ondrop.events.watch import FolderWatcher
from ondrop.exposed import Exposed
from ondrop.fdl.models import Service
from ondrop.health import DiskSpace
from ondrop.intake import Intake
from ondrop.joblog import LiveLog
from ondrop.pools.base import Admission, Allocation, Node, Slots
from ondrop.pools.batch import BatchCapacity, detect_gpus, machine_memory
from ondrop.pools.dispatch import Dispatcher
from ondrop.pools.faas import FaasLimits
from ondrop.pools.router import BATCH, FAAS, Router
from ondrop.pools.waiters import Waiters
from ondrop.quotas import Limits, Quotas
from ondrop.ready import Ready
from ondrop.replicas import LEASE, Heartbeat, replica_id
from ondrop.runtime import ContainerRuntime, build_runtimes, choose_runtime
from ondrop.runtime.base import Runtime
from ondrop.runtime.process import ProcessRuntime
from ondrop.services import Applied, Ownership, Services
from ondrop.settings import Settings
from ondrop.storage import LocalStorage, Providers, StorageProvider, build, canonical
from ondrop.storage.base import ObjectInfo
from ondrop.storage.onedata import OnedataStorage
from ondrop.storage.seaweedfs import SeaweedFS
from ondrop.store.base import CANCELLED, FINISHED, RUNNING, SUCCEEDED, Claim, Job, Store
from ondrop.store.sqlite import SQLiteStore
from ondrop.store.url import shown
from ondrop.supervisor import Folders, Supervisor
from ondrop.telemetry import Telemetry

log = logging.getLogger(__name__)

LOCK_FILE = "ondrop.lock"
CLUSTER_FAAS = 256  # faas jobs at once on a cluster, unless ONDROP_FAAS_CONCURRENCY says
PUSHED_POLL = 60.0  # seconds between safety listings of stores that push their events
# Seconds an invocation body or a /run result no job needs is kept on the shared folder
# before a starting control plane removes it (another one may be making it now).
SHARED_KEEP = 3600.0
SHARED_MARKER = ".ondrop-shared"  # the shared folder's id, kept in it and in the store
ALLOWED_IMAGES = "allowed-image-repositories"  # store meta: a JSON list (see allowed_images)
WATCH_LEASE = "watchers"  # held in a shared store by the control plane that watches


class Platform:
    def __init__(
        self, settings: Settings, runtimes: dict[str, Runtime] | None = None, url: str = ""
    ) -> None:
        """`url` is where this platform's API answers (stores send their webhooks there)."""
        self.settings = settings
        self.url = url
        data = platform_folder(Path(settings.data), "data")  # tokens and secrets live here
        self.data = data
        self.tmp = data / "tmp"
        self.store = _open_store(settings.store, data)
        # Where what every control plane on the store must reach lives: local.default,
        # invocation bodies, /run results. The data folder, or the shared folder.
        shared = settings.shared_folder
        self.root = platform_folder(Path(shared), "shared") if shared else data
        local = LocalStorage("local.default", self.root / "storage")
        default: StorageProvider = local
        self.pushed: set[str] = set()  # providers that send their own events (webhooks)
        self.object_store: SeaweedFS | None = None
        if settings.object_store == "seaweedfs":
            self.object_store = SeaweedFS(data / "seaweedfs", settings.object_store_host)
            default = build("minio.default", self.object_store.provider_config())
            self.pushed.add("minio.default")
        self.providers = Providers({"local.default": local, "minio.default": default})
        self.runtimes: dict[str, Runtime] = (
            runtimes if runtimes is not None else build_runtimes(settings, data)
        )
        self.payloads = Payloads(self.root / "payloads")
        self.services = Services(self.store, self.providers, self.check_runnable)
        self.space = DiskSpace(self._writes_to)  # is there room where the platform writes
        self.supervisor = Supervisor(
            self.store,
            self.providers,
            self.runtime_for,
            Folders(data / "work", self.root / "results"),
            payloads=self.payloads,
            on_full=self.space.met,
        )
        self.gpus = gpus = detect_gpus(settings.gpus)  # device ids the batch pool hands out
        self.waiters = Waiters(self.store)
        self.replica = replica_id(data)
        self.heartbeat = Heartbeat(
            self.store,
            self.replica,
            url,
            self.wake,
            on_beat=self._beat,
            on_cancel=self._stop_running if self.store.shared else None,
        )
        self.ray: RayCluster | None = None  # made when a pool runs on Ray
        self.quotas = Quotas(self.store, Limits.parse(settings.quota))
        slots = Slots(settings.workers)  # scripts at once on this machine
        self.backends: dict[str, Backend] = {}
        self.pools: dict[str, Dispatcher] = {}
        self.telemetry = Telemetry()
        self.telemetry.watch(self._queued, self.running)
        for pool in (FAAS, BATCH):
            admission, backend, pool_slots = self._backend(pool, slots)
            self.backends[pool] = backend
            self.pools[pool] = Dispatcher(
                self.store,
                self.services,
                admission,
                backend,
                self.waiters,
                pool_slots,
                on_finished=self._job_finished,
                on_outputs=self._outputs_stored,
                wake_pool=lambda name: self.pools[name].wake(),
                owner=self.replica,
                quotas=self.quotas,
                telemetry=self.telemetry,
            )
        on_cluster = settings.backend_of(BATCH) == "ray"
        self.intake = Intake(
            self.store,
            self.services,
            self.providers,
            Router(bool(gpus) or on_cluster),  # a cluster may have (or add) GPU nodes
            self._jobs_queued,
        )
        self.buckets = Buckets(self.store, self.providers, self.services)
        self.exposed = Exposed(self.services, self.runtime_for, data / "work", self.store)
        self.ready = Ready(self.services, self.runtime_for, self._allocation, data / "work")
        self.watchers: dict[str, EventSource] = {}
        self._watch_lock = threading.Lock()
        self.started = False
        self.stopping = False  # shutdown has begun: what streams to clients ends
        self._lock: IO[str] | None = None

    def _backend(self, pool: str, slots: Slots) -> tuple[Admission, Backend, Slots]:
        """The pool's admission, backend and limit on jobs at once, as the settings say."""
        settings = self.settings
        if settings.backend_of(pool) == "ray":
            from ondrop.backends.ray import ClusterBatch, RayBackend, RayCluster

            if self.ray is None:
                self.ray = RayCluster(settings.ray_address, self.store, self._node_configs)
                self.ray.on_connected = self.wake
            cluster_admission: Admission
            if pool == FAAS:
                concurrency = settings.faas_concurrency or CLUSTER_FAAS
                cluster_admission = FaasLimits(
                    concurrency, settings.faas_max_timeout, settings.faas_max_memory
                )
            else:
                cluster_admission = ClusterBatch(self.ray)
            # The cluster bounds what runs at once, not this machine's cores.
            limit = Slots(max(cluster_admission.slots(), 1))
            return cluster_admission, RayBackend(pool, self.ray, self._transit()), limit
        admission: Admission
        if pool == FAAS:
            admission = FaasLimits(
                settings.faas_concurrency or settings.workers,
                settings.faas_max_timeout,
                settings.faas_max_memory,
            )
        else:
            admission = BatchCapacity(settings.batch_cpus, settings.batch_memory, self.gpus)
        return admission, LocalBackend(self.supervisor, self.runtimes.values(), pool), slots

    def _transit(self) -> Transit:
        """How bodies and /run results reach a cluster's nodes: the bundled object store."""
        default = self.providers.get("minio.default")
        reached = None if isinstance(default, LocalStorage) else default
        return Transit(reached, self.payloads, self.supervisor.folders.results)

    def _node_configs(self) -> dict[str, dict[str, Any]]:
        """The providers' configurations, for nodes to build their own clients from."""
        configs = self.providers.configs()
        if self.object_store is not None:
            configs["minio.default"] = {**self.object_store.provider_config()}
        return configs

    def on_cluster(self, service: Service) -> bool:
        """Whether some of `service`'s jobs may run on a cluster's nodes."""
        pools = {BATCH} if service.mode == "batch" else {FAAS, BATCH}
        if service.mode == "faas" and not service.gpu:
            pools = {FAAS}
        return any(self.settings.backend_of(pool) == "ray" for pool in pools)

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        self._lock = _lock_data(self.data)
        try:
            if not self.settings.shared_folder and not self.store.hold_sole():
                # Without a folder they all reach, one control plane's bodies, results and
                # local files would be out of the others' reach.
                raise ConflictError(
                    f"another ondrop up is running on the store {shown(self.settings.store)}; "
                    "stop it first, give this one another --store, or give every control "
                    "plane on the store the same --shared-folder"
                )
            self._start()
        except BaseException:
            if self.object_store is not None:
                self.object_store.stop()
            self._lock.close()
            self._lock = None
            raise

    def _start(self) -> None:
        if self.settings.shared_folder:
            self._check_shared_folder()
        if self.object_store is not None:
            if not self.url:
                raise DefinitionError("the bundled object store needs the platform's URL")
            self.object_store.start(f"{self.url}/events/seaweedfs")
        # This control plane's attempts still running are from before it stopped; those of
        # the others on a shared store are theirs while they renew their leases.
        requeued = self.store.requeue_running(
            "the platform stopped while it ran", owner=self.replica
        )
        if requeued:
            log.info(
                "queued again %d job(s) that were running when the platform stopped", len(requeued)
            )
        # What is on the shared folder may be another control plane's, being made now.
        stale = time.time() - SHARED_KEEP if self.settings.shared_folder else None
        reaped = self.supervisor.clean_orphans(self.runtimes.values(), results_before=stale)
        for runtime in self.runtimes.values():
            runtime.clean()
        if reaped:
            log.warning("killed %d job process(es) left running by a platform that died", reaped)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.payloads.keep_only(self.store.payloads_in_use(), older_than=stale)
        self._prune_images()
        collecting = self.intake.collect_settled()
        if collecting:
            log.info("started %d collecting job(s) left due by the last run", len(collecting))
        self.heartbeat.start()
        if self.store.shared:  # a /run client here may wait for a job another one runs
            self.store.listen(self.waiters.ended_elsewhere)
        for pool in self.pools.values():
            pool.start()
        self.exposed.start()
        self.ready.start()
        self.started = True
        self._watch()

    def _check_shared_folder(self) -> None:
        """Refuse a shared folder other than the one the store's control planes share: the
        bodies and results one of them keeps there would be out of the others' reach. The
        folder holds an id, and the store the id of the folder its first control plane had."""
        marker = self.root / SHARED_MARKER
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(16) + "\n")
        ours = marker.read_text().strip()
        theirs = self.store.get_meta(SHARED_MARKER)
        if theirs is None:
            self.store.set_meta(SHARED_MARKER, ours)
        elif theirs != ours:
            raise ConflictError(
                f"the shared folder {self.root} is not the one the other control planes on the "
                f"store {shown(self.settings.store)} share (its {SHARED_MARKER} file holds "
                f"another id): give this one their --shared-folder, the same folder at the "
                "same path"
            )

    def begin_stop(self) -> None:
        """Shutdown has begun: start no more jobs; running ones go on for the grace period."""
        self.stopping = True
        stopping = UnavailableError("the platform is stopping; the job runs on its next start")
        self.waiters.closed = stopping
        for pool in self.pools.values():
            pool.drain()
        self.waiters.abandon([j for j in self.waiters.waiting() if not self._runs(j)], stopping)

    def interrupt(self, force: bool = False) -> None:
        """Stop running jobs now (`force`: SIGKILL at once); they run again on the next start."""
        for backend in self.backends.values():
            backend.stop_all(force)

    def stop(self, grace: float | None = None) -> None:
        """Stop watching, let running jobs finish within `grace` seconds (the setting when
        None), interrupt the rest, close the store."""
        self.stopping = True
        for watcher in self.watchers.values():
            watcher.stop()
        if self.watchers and self.store.shared:
            with contextlib.suppress(Exception):  # else it runs out, and another takes it
                self.store.release(WATCH_LEASE, self.replica)
        deadline = time.monotonic() + (self.settings.grace if grace is None else grace)
        for pool in self.pools.values():
            pool.stop(max(0.0, deadline - time.monotonic()), self.interrupt)
        self.heartbeat.stop()  # its leases run out: what is still running is taken back
        self.exposed.close()
        self.ready.close()
        for backend in self.backends.values():
            backend.close()
        if self.ray is not None:
            self.ray.close()
        for runtime in self.runtimes.values():
            runtime.close()
        self.supervisor.close()
        self.providers.close()
        self.store.close()
        if self.object_store is not None:
            self.object_store.stop()
        self.started = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- services -------------------------------------------------------------------
    def apply(
        self,
        services: Sequence[Service],
        mode: str = "apply",
        source: str = "",
        ownership: Ownership | None = None,
    ) -> Applied:
        applied = self.services.apply(
            services, mode, before_save=self._past, source=source, ownership=ownership
        )
        if self.started:
            self._watch()
            self.exposed.wake()
            self.ready.wake()
        return applied

    def _past(self, inputs: list[tuple[StorageProvider, str]]) -> dict[tuple[str, str], int]:
        """Files already in a new input folder belong to the past: remembered as seen
        before the service exists, so that only new arrivals start its jobs (`reprocess`
        starts them). How many each folder held."""
        watched = set(self.services.input_folders())
        held: dict[tuple[str, str], int] = {}
        for provider, folder in inputs:
            if (provider.name, folder) not in watched:
                for info in provider.list(folder):
                    self.intake.seen(provider.name, info)
                    held[provider.name, folder] = held.get((provider.name, folder), 0) + 1
        return held

    def container_engine(self) -> str | None:
        """The container engine in use ("podman 4.3.1"), or None."""
        runtime = self.runtimes.get("container")
        if not isinstance(runtime, ContainerRuntime):
            return None
        return f"{runtime.engine.name} {runtime.engine.version()}"

    def delete_service(self, name: str) -> None:
        """Remove a service and its jobs: those running here are stopped, and whoever
        waits for one of them is told."""
        jobs = self.store.jobs(name)
        unfinished = [j.id for j in jobs if j.status not in FINISHED]
        self.services.delete(name)
        self.exposed.forget(name)
        self.ready.wake()
        for job in jobs:
            if job.status == RUNNING:
                self._stop_running(job.id, f"service {name!r} was removed")
        self.waiters.abandon(unfinished, NotFoundError(f"service {name!r} was removed"))

    # -- jobs -----------------------------------------------------------------------
    def watch(self, job_id: str) -> Future[Job]:
        """A future for the end of the job (see Waiters)."""
        return self.waiters.watch(job_id, running=self._runs(job_id))

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> str:
        """Cancel a queued job, or stop a running one (it then ends cancelled); returns the
        job's status now. A finished job is left as it is."""
        job = self.store.job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if self.store.cancel_queued(job_id, reason):
            cancelled = self.store.job(job_id)
            if cancelled is not None:
                self.waiters.resolve(cancelled)
            self.intake.collect(job_id)  # it may have been the last of its family
            return CANCELLED
        if self._stop_running(job_id, reason):
            return RUNNING
        if self.store.shared and self.store.request_cancel(job_id, reason):
            return RUNNING  # another control plane runs it: it stops it at its next look
        return job.status

    def _stop_running(self, job_id: str, reason: str) -> bool:
        """Stop the job if it runs here (it then ends cancelled)."""
        return any(pool.cancel_running(job_id, reason) for pool in self.pools.values())

    def live_log(self, job_id: str, attempt: int) -> LiveLog | None:
        """The log of that attempt's running script, read as it grows, when it runs where
        this control plane can read it (the local backend); None otherwise."""
        for backend in dict.fromkeys(self.backends.values()):
            if (found := backend.live_log(job_id, attempt)) is not None:
                return found
        return None

    def problems(self) -> list[str]:
        """What keeps the platform from doing all its work now, each with what to do: a
        full disk, the bundled object store down. Empty when all is well."""
        found = self.space.problems()
        if self.object_store is not None and (down := self.object_store.problem()):
            found.append(down)
        for backend in self.backends.values():
            if (problem := backend.problem()) and problem not in found:
                found.append(problem)
        return found

    def _writes_to(self) -> list[tuple[str, Path]]:
        """The folders the platform writes to: the data folder, and local providers' own."""
        places = [("the data folder", self.data)]
        for provider in self.providers.all():
            if isinstance(provider, LocalStorage) and not provider.root.is_relative_to(
                self.data.resolve()
            ):
                places.append((f"{provider.name}'s folder", provider.root))
        return places

    def _queued(self) -> dict[str, int]:
        """Jobs queued in the store, by pool (every pool named)."""
        queued = self.store.queued_by_pool()
        return {name: queued.get(name, 0) for name in self.pools}

    def running(self) -> dict[str, dict[str, int]]:
        """Jobs running now, by pool and service."""
        return {name: pool.running() for name, pool in self.pools.items()}

    def nodes(self) -> list[Node]:
        """The machines jobs run on: a cluster's nodes, and this one when a pool runs
        its jobs here (with the batch pool's capacity when that pool is here)."""
        found: dict[str, Node] = {}
        for pool in self.pools.values():
            for node in pool.admission.nodes():
                found.setdefault(node.name, node)
        if any(self.settings.backend_of(p) != "ray" for p in self.pools) and not any(
            isinstance(p.admission, BatchCapacity) for p in self.pools.values()
        ):
            here = socket.gethostname()
            found.setdefault(
                here, Node(here, float(os.cpu_count() or 1), machine_memory(), len(self.gpus))
            )
        return list(found.values())

    def wake(self) -> None:
        for pool in self.pools.values():
            pool.wake()

    def _runs(self, job_id: str) -> bool:
        return any(pool.runs(job_id) for pool in self.pools.values())

    def _jobs_queued(self, jobs: list[Job]) -> None:
        for pool in {job.pool for job in jobs}:
            self.pools[pool].wake()

    @property
    def isolates_processes(self) -> bool:
        """Whether the process runtime runs each job as a user of its own, the data folder
        hidden (the platform runs as root), so a script on the host reaches nothing of it."""
        process = self.runtimes.get("process")
        return isinstance(process, ProcessRuntime) and process.isolation is not None

    def _allocation(self, service: Service) -> Allocation | None:
        """What the jobs of `service`'s first pool run with, where they run here."""
        pool = BATCH if service.mode == "batch" else FAAS
        if not isinstance(self.backends.get(pool), LocalBackend):
            return None
        return self.pools[pool].admission.allocation(service)

    def runtime_for(self, service: Service) -> Runtime | str:
        """The runtime that runs `service`'s jobs, or why none can."""
        return choose_runtime(service, self.runtimes, self.settings.run_images_on_host)

    @property
    def allowed_images(self) -> list[str]:
        """OSCAR's `allowed_image_repositories`: when not empty, a service's image must
        contain one of them (kept in the store, so every control plane on it agrees)."""
        found: list[str] = json.loads(self.store.get_meta(ALLOWED_IMAGES) or "[]")
        return found

    @allowed_images.setter
    def allowed_images(self, prefixes: list[str]) -> None:
        self.store.set_meta(ALLOWED_IMAGES, json.dumps(prefixes))

    def check_runnable(self, service: Service) -> tuple[str | None, str | None]:
        allowed = self.allowed_images if service.image else []
        if allowed and not any(prefix in service.image for prefix in allowed):
            return (
                f"image {service.image!r} is not from an allowed repository (this platform "
                f"allows images from {', '.join(map(repr, allowed))}: /system/config's "
                "allowed_image_repositories)"
            ), None
        if self.on_cluster(service):
            if problem := self._unreachable(service):
                return problem, None
            from ondrop.backends.ray import ClusterBatch

            batch = self.pools[BATCH].admission
            if isinstance(batch, ClusterBatch) and (wait := batch.fits(service)):
                return None, wait
        if service.gpu or service.mode in ("batch", "hybrid"):
            problem = self.pools["batch"].admission.refuse(service)
            if problem:
                return problem, None
        if service.runtime is not None and service.runtime not in self.runtimes:
            return f"the {service.runtime} runtime is not available on this platform", None
        runtime = self.runtime_for(service)
        if isinstance(runtime, str):
            if self.settings.pull == "never":  # the image cannot be had here: refused
                return runtime, None
            return None, runtime + "; its jobs wait until then"
        if service.expose is not None and not isinstance(runtime, ContainerRuntime):
            return (
                f"expose: an exposed service's server runs in a container of its own network, "
                f"and the {runtime.name} runtime has none: give the service an image"
            ), None
        if runtime.name == "process" and not service.script.strip():
            return "the process runtime needs a script", None
        if runtime.name == "process" and service.image:
            return None, f"image {service.image!r} is not used: the script runs on the host"
        if isinstance(runtime, ContainerRuntime):
            if not service.image:
                return "the container runtime needs an image", None
            try:
                runtime.images.image(service.image)  # pulled now, as the pull policy has it
            except NotFoundError as exc:
                if self.settings.pull == "never":
                    return str(exc), None
                return None, f"{exc}; its jobs wait until it is here"
            except OndropError as exc:
                return str(exc), None
        return None, None

    def _unreachable(self, service: Service) -> str | None:
        """Why the nodes of a cluster could not reach one of `service`'s folders: a local
        folder is on this machine alone, unless declared `shared` (the same path on every
        node)."""
        known = self.providers.configs()
        for name in service.provider_names():
            kind, _, ident = canonical(name).partition(".")
            config = service.storage_providers.get(kind, {}).get(ident)
            if config is None:  # one of the platform's, or declared before
                config = known.get(f"{kind}.{ident}", {})
                try:
                    local = isinstance(self.providers.get(name), LocalStorage)
                except NotFoundError:
                    continue  # the services' check says so
            else:
                local = kind == "local"
            if local and not config.get("shared"):
                return (
                    f"storage provider {kind}.{ident!s} is a folder on this machine, which the "
                    "nodes of the Ray cluster cannot reach: use an object store (minio.*, "
                    "s3.*; `ondrop up --object-store seaweedfs` bundles one as minio.default) "
                    "or WebDAV, or declare the folder `shared: true` if the same path is "
                    "mounted on every node"
                )
        return None

    # -- events ---------------------------------------------------------------------
    def _prune_images(self) -> None:
        """Forget unpacked images no applied service uses (an old build of a tag)."""
        runtime = self.runtimes.get("container")
        if not isinstance(runtime, ContainerRuntime):
            return
        keep = set()
        for service in self.services.all():
            if service.image and self.runtime_for(service) is runtime:
                try:
                    keep.add(runtime.images.image(service.image).id)
                except OndropError:
                    continue
        runtime.images.prune(keep)

    def _job_finished(self, claim: Claim, job: Job) -> None:
        if job.status == SUCCEEDED and claim.event.payload:
            self.payloads.discard(claim.event.payload)  # a failed job keeps it for a re-run
        self.intake.collect(job.id)

    def _outputs_stored(self, job_id: str, outputs: tuple[tuple[str, ObjectInfo], ...]) -> None:
        for provider, info in outputs:  # chains start here, whoever else sees the objects
            self.intake.object_stored(provider, info, parent_job=job_id)

    def _beat(self) -> None:
        """At each heartbeat: the services again if another control plane changed them,
        and the watchers of their folders, if this control plane holds their lease."""
        self.services.refresh()
        if self.started:
            self._watch()

    def _watching(self) -> bool:
        """Whether this control plane watches the input folders: always on a store of its
        own; on a shared one, while it holds their lease (one at a time, so that a folder is
        listed once, and taken over within a lease of its holder's death)."""
        if not self.store.shared:
            return True
        now = time.time()
        try:
            return self.store.lease(WATCH_LEASE, self.replica, now + LEASE, now)
        except Exception as exc:  # the store is down: keep what runs; the next beat asks
            log.warning("cannot renew the lease on watching the input folders: %s", exc)
            return bool(self.watchers)

    def _watch(self) -> None:
        """An event source for every provider a service takes input from: inotify for local
        folders; a Onedata space's changes stream; for other stores, polling, or one listing
        at start where the store pushes."""
        with self._watch_lock:  # an apply and the heartbeat may both ask
            self._watch_all()

    def _watch_all(self) -> None:
        if not self._watching():
            if self.watchers:
                log.info("another control plane watches the input folders now")
            for watcher in self.watchers.values():
                watcher.stop()
            self.watchers.clear()
            return
        wanted = {name for name, _ in self.services.input_folders()}
        for name in sorted(wanted - set(self.watchers)):
            provider = self.providers.get(name)
            folders = functools.partial(self._folders_of, name)
            source: EventSource
            if isinstance(provider, LocalStorage) and inotify.available():
                source = FolderWatcher(provider, folders)
            elif isinstance(provider, OnedataStorage):
                source = ChangesStream(provider, folders, self.store, self.settings.poll_interval)
            elif isinstance(provider, LocalStorage):
                interval = self.settings.poll_interval or 1.0
                log.warning(
                    "this system has no inotify: %s is listed every %g s for new files",
                    name,
                    interval,
                )
                source = Poller(provider, folders, interval, self.telemetry.storage_error)
            else:
                interval = self.settings.poll_interval
                if name in self.pushed:  # webhooks can be lost: a slow listing catches up
                    interval = max(PUSHED_POLL, interval) if interval else 0.0
                source = Poller(provider, folders, interval, self.telemetry.storage_error)
            self.watchers[name] = source
            source.start(self._objects_seen)

    def _folders_of(self, provider: str) -> list[str]:
        return [folder for p, folder in self.services.input_folders() if p == provider]

    def _objects_seen(self, provider: str, infos: list[ObjectInfo]) -> None:
        self.intake.objects_stored(provider, infos)


def _open_store(url: str, data: Path) -> Store:
    """The store the settings name: the SQLite file in the data folder, or PostgreSQL."""
    if not url:
        return SQLiteStore(data / "ondrop.db")
    from ondrop.store.postgres import PostgresStore  # psycopg only when asked for

    return PostgresStore(url)


def platform_folder(path: Path, what: str) -> Path:
    """`path`, made if missing (readable by this user only): the data or shared folder."""
    if path.exists() and not path.is_dir():
        raise DefinitionError(
            f"cannot use {path} as the {what} folder: it is a file, not a folder; name a "
            "folder (made if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DefinitionError(
            f"cannot use {path} as the {what} folder: {exc.strerror or exc}"
        ) from None
    return path


def _lock_data(data: Path) -> IO[str]:
    """Hold the data folder for this process: two platforms on one store would run every
    job twice."""
    handle = (data / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConflictError(
            f"another ondrop ({owner}) is running with the data folder {data}; stop it first, "
            "or give this one another --data"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
