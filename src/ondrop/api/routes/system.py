"""/health, /system/info, /system/config (OSCAR) and /system/status (ondrop)."""

from __future__ import annotations

import platform as host
from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import PlainTextResponse

from ondrop import __version__
from ondrop.api.deps import Admin, PlatformDep, SignedIn
from ondrop.api.openapi import READS, WRITES, errors
from ondrop.errors import DefinitionError, OndropError
from ondrop.platform import Platform

router = APIRouter(responses=errors(500))

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
MAX_REPOSITORIES = 100  # entries of allowed_image_repositories


@router.get(
    "/health",
    response_class=PlainTextResponse,
    tags=["system"],
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string", "enum": ["Ok"]}}}},
        503: {
            "description": "`Degraded: ` and what is wrong",
            "content": {"text/plain": {"schema": {"type": "string", "pattern": "^Degraded: "}}},
        },
    },
)
def health(platform: PlatformDep) -> PlainTextResponse:
    """`Ok` while the platform can do all its work; `503 Degraded: <reasons>` while it
    cannot (a full disk, the bundled object store down): it still takes what it can and
    jobs wait. No credentials needed."""
    problems = platform.problems()
    if problems:
        return PlainTextResponse("Degraded: " + "; ".join(problems), 503)
    return PlainTextResponse("Ok")


@router.get("/system/info", tags=["system"], responses=errors(401, 403))
def info(platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    """OSCAR's info shape, plus what ondrop runs jobs with."""
    machine = host.machine()
    return {
        "version": __version__,
        "git_commit": "",
        "architecture": ARCHITECTURES.get(machine, machine),
        "kubernetes_version": "",
        "serverless_backend": {"name": "ondrop", "version": __version__},
        "backend": "local",
        "runtimes": {name: r.describe() for name, r in sorted(platform.runtimes.items())},
        "container_engine": platform.container_engine(),
        "workers": platform.settings.workers,
        "storage_providers": platform.providers.names(),
    }


@router.get("/system/config", tags=["system"], responses=errors(401, 403))
def config(platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    """OSCAR's config shape. `minio_provider` is the bundled object store when the
    platform runs one (`--object-store seaweedfs`); on the embedded default it is empty
    and `minio.default` is the local store. Its keys are the admin's to see: a user's
    answer has them blank. `gpu_available`: the batch pool has GPUs."""
    minio = {"endpoint": "", "verify": True, "access_key": "", "secret_key": "", "region": ""}
    if platform.object_store is not None:
        minio = platform.object_store.provider_config()
        if not who.admin:
            minio = {**minio, "access_key": "", "secret_key": ""}
    return {
        "config": {
            "name": "ondrop",
            "namespace": "",
            "services_namespace": "",
            "gpu_available": bool(platform.gpus),
            "interLink_available": False,
            "serverless_backend": "ondrop",
            "yunikorn_enable": False,
        },
        "minio_provider": minio,
        "allowed_image_repositories": platform.allowed_images,
        "storage_providers": platform.providers.names(),
        "max_upload": platform.settings.max_upload,
    }


@router.put(
    "/system/config",
    dependencies=[Admin],
    tags=["system"],
    responses=errors(401, 422, *WRITES),
)
def update_config(platform: PlatformDep, raw: Any = Body()) -> list[str]:
    """Change what can change while the platform runs, as OSCAR's PUT does:
    `{"allowed_image_repositories": [text, ...]}`. When the list is not empty, a service
    may use an image only if its name contains one of them (checked at apply; services
    already applied keep running). Answers the list now in force. Other fields of
    OSCAR's config are read-only and ignored."""
    if not isinstance(raw, dict):
        raise DefinitionError('expected {"allowed_image_repositories": [text, ...]}')
    if "allowed_image_repositories" not in raw:
        return platform.allowed_images  # nothing asked to change
    given = raw["allowed_image_repositories"] or []
    if (
        not isinstance(given, list)
        or len(given) > MAX_REPOSITORIES
        or not all(
            isinstance(p, str) and 0 < len(p.strip()) <= 255 and p.isprintable() for p in given
        )
    ):
        raise DefinitionError(
            f"allowed_image_repositories: expected a list of at most {MAX_REPOSITORIES} "
            "repository names (1 to 255 printable characters each), such as "
            '["ghcr.io/grycap/", "localhost/"]'
        )
    platform.allowed_images = [p.strip() for p in given]
    return platform.allowed_images


@router.get(
    "/system/status",
    dependencies=[Admin],
    tags=["system"],
    responses=errors(401, 404, *READS, why={404: "no service of that name"}),
)
def status(platform: PlatformDep, service: str | None = None) -> dict[str, Any]:
    """OSCAR's status (`cluster`: the nodes jobs run on, with their CPUs, memory and
    GPUs; `oscar`: the control planes; `minio`: buckets and objects of the platform's
    store, counted at most every 30 s), and ondrop's beside it: jobs by status (queued,
    running, succeeded, failed, cancelled), for every service or
    the one named, jobs running per service now, the platform's health: `ok`, or
    `degraded` with the problems /health names, and the control planes on its store that
    are alive (id, API address, since and last seen, in seconds since the epoch) (ondrop).
    With `service`, also `upstream`: the services whose work can lead to jobs of it (their
    outputs reach its input, or it collects them)."""
    if service is not None:
        platform.services.get(service)
    queued = platform.store.queued_by_pool()
    problems = platform.problems()
    extra = {} if service is None else {"upstream": platform.services.upstream(service)}
    replicas = platform.heartbeat.alive()
    jobs = platform.store.count_jobs(service)
    return {
        **_oscar_status(platform, not problems, len(replicas), sum(jobs.values())),
        **extra,
        "health": {"status": "degraded" if problems else "ok", "problems": problems},
        "workers": platform.settings.workers,
        "jobs": platform.store.count_jobs(service),
        "running": platform.running(),
        "pools": {
            name: {**pool.admission.describe(), "queued": queued.get(name, 0)}
            for name, pool in platform.pools.items()
        },
        "services": len(platform.services.all()),
        "replicas": [
            {"id": r.id, "address": r.address, "since": r.since, "seen": r.seen} for r in replicas
        ],
    }


def _oscar_status(platform: Platform, ready: bool, replicas: int, jobs: int) -> dict[str, Any]:
    """OSCAR's status fields: `cluster` (the nodes jobs run on), `oscar` (the control
    planes), `minio` (the platform's store)."""
    nodes = platform.nodes()
    free = [n.free_cpus if n.free_cpus is not None else n.cpus for n in nodes]
    free_memory = [n.free_memory if n.free_memory is not None else n.memory for n in nodes]
    try:
        buckets, objects = platform.buckets.summary("minio.default")
    except OndropError:
        buckets = objects = 0  # the store is down: /health says so
    return {
        "cluster": {
            "nodes_count": len(nodes),
            "metrics": {
                "cpu": {
                    "total_free_cores": int(sum(free)),
                    "max_free_on_node_cores": int(max(free, default=0)),
                    "total_schedulable_cores": int(sum(n.cpus for n in nodes)),
                    "total_schedulable_on_node_cores": int(max((n.cpus for n in nodes), default=0)),
                },
                "memory": {
                    "total_free_bytes": sum(free_memory),
                    "max_free_on_node_bytes": max(free_memory, default=0),
                    "total_schedulable_bytes": sum(n.memory for n in nodes),
                    "max_schedulable_on_node_bytes": max((n.memory for n in nodes), default=0),
                },
                "gpu": {"total_gpu": sum(n.gpus for n in nodes)},
            },
            "nodes": [
                {
                    "name": n.name,
                    "cpu": {"capacity_cores": int(n.cpus), "usage_cores": int(n.cpus - f)},
                    "memory": {"capacity_bytes": n.memory, "usage_bytes": n.memory - m},
                    "gpu": n.gpus,
                    "is_interlink": False,
                    "status": "Ready",
                    "conditions": [{"type": "Ready", "status": True}],
                }
                for n, f, m in zip(nodes, free, free_memory, strict=True)
            ],
        },
        "oscar": {
            "deployment_name": "ondrop",
            "ready": ready,
            "deployment": {
                "available_replicas": replicas,
                "ready_replicas": replicas,
                "replicas": replicas,
                "strategy": "",
                "labels": {},
            },
            "jobs_count": jobs,
            "pods": {"total": replicas, "states": {"Running": replicas}},
            "oidc": {"enabled": False, "issuers": [], "groups": []},
        },
        "minio": {"buckets_count": buckets, "total_objects": objects},
    }
