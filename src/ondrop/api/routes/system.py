"""/health, /system/info, /system/config (OSCAR) and /system/status (ondrop)."""

from __future__ import annotations

import platform as host
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ondrop import __version__
from ondrop.api.deps import Admin, PlatformDep
from ondrop.api.openapi import READS, errors

router = APIRouter(responses=errors(500))

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


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


@router.get("/system/info", dependencies=[Admin], tags=["system"], responses=errors(401))
def info(platform: PlatformDep) -> dict[str, Any]:
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


@router.get("/system/config", dependencies=[Admin], tags=["system"], responses=errors(401))
def config(platform: PlatformDep) -> dict[str, Any]:
    """OSCAR's config shape. `minio_provider` is the bundled object store when the
    platform runs one (`--object-store seaweedfs`); on the embedded default it is empty
    and `minio.default` is the local store. `gpu_available`: the batch pool has GPUs."""
    minio = {"endpoint": "", "verify": True, "access_key": "", "secret_key": "", "region": ""}
    if platform.object_store is not None:
        minio = platform.object_store.provider_config()
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
        "storage_providers": platform.providers.names(),
        "max_upload": platform.settings.max_upload,
    }


@router.get(
    "/system/status",
    dependencies=[Admin],
    tags=["system"],
    responses=errors(401, 404, *READS, why={404: "no service of that name"}),
)
def status(platform: PlatformDep, service: str | None = None) -> dict[str, Any]:
    """Jobs by status (queued, running, succeeded, failed, cancelled), for every service or
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
    return {
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
            {"id": r.id, "address": r.address, "since": r.since, "seen": r.seen}
            for r in platform.heartbeat.alive()
        ],
    }
