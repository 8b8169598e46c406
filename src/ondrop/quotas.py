"""Quotas: what the jobs of one user's services may hold at once (cores, memory, GPUs,
jobs), as OSCAR's per-user Kueue ClusterQueues do. A job that does not fit waits queued
until the user's running jobs leave room; it is never refused for it.

A user's quota is the one the admin set (PUT /system/quotas/user/{id}, kept in the store),
else the platform's default (ONDROP_QUOTA), else none. The admin's own services have
none. A job counts what its service declares (`cpu`, `memory`, `gpu`); a service that
declares no `cpu` (or `memory`) under a cpu (memory) quota counts as the whole of it, as
does one that declares more: such a job runs alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ondrop.errors import DefinitionError
from ondrop.fdl.models import ADMIN_OWNER, Service
from ondrop.quantity import parse_bytes, parse_cpu
from ondrop.store.base import RUNNING, Quota, Store

KEY = "quota."  # store key, + the user's id: the quota the admin set (JSON)
FRESH = 5.0  # seconds a quota read from the store is used before it is read again
FIELDS = ("cpu", "memory", "gpu", "jobs")


@dataclass(frozen=True)
class Limits:
    cpu: float | None = None  # cores
    memory: int | None = None  # bytes
    gpu: int | None = None
    jobs: int | None = None  # at once

    @classmethod
    def parse(cls, text: str) -> Limits:
        """`cpu=4,memory=16Gi,gpu=1,jobs=20` (any of them); empty: no limit."""
        given: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in FIELDS or not value.strip():
                raise DefinitionError(
                    f"quota {text!r}: expected name=value pairs of {', '.join(FIELDS)} "
                    "(cpu=4,memory=16Gi,jobs=20)"
                )
            given[name.strip()] = value.strip()
        return cls().changed(given)

    def changed(self, given: dict[str, Any]) -> Limits:
        """These limits with those `given` (text, as OSCAR's QuotaUpdateRequest sends them:
        cpu in cores or millicores, memory as a size) replaced; "" leaves one as it is,
        "none" takes it away."""
        values: dict[str, Any] = {}
        for name, value in given.items():
            text = str(value if value is not None else "").strip()
            if not text:
                continue
            if text.lower() in ("none", "unlimited"):
                values[name] = None
                continue
            parse = {"cpu": parse_cpu, "memory": parse_bytes}.get(name, int)
            try:
                values[name] = parse(text)
            except ValueError:
                values[name] = None
            if values[name] is None or values[name] < 0:
                raise DefinitionError(f"quota {name}: {text!r} is not a quantity of zero or more")
        return replace(self, **values)

    def needs(self, service: Service) -> tuple[float, int, int]:
        """What one job of `service` counts: as it declares, at most the whole quota."""
        cpu = parse_cpu(service.cpu) if service.cpu else None
        memory = service.memory_bytes
        return (
            _counted(cpu, self.cpu, 0.0),
            _counted(memory, self.memory, 0),
            min(service.gpu, self.gpu) if self.gpu is not None else service.gpu,
        )

    def stored(self) -> str:
        return json.dumps({k: getattr(self, k) for k in FIELDS})


def _counted(declared: Any, limit: Any, nothing: Any) -> Any:
    if limit is None:
        return declared or nothing
    return limit if declared is None else min(declared, limit)


class Quotas:
    """The users' quotas, read from the store (cached for FRESH seconds)."""

    def __init__(self, store: Store, default: Limits) -> None:
        self.store = store
        self.default = default
        self._read: dict[str, tuple[float, Limits | None]] = {}
        self._lock = threading.Lock()

    def of(self, user: str) -> Limits | None:
        """The quota of `user`; None: no limit."""
        if user == ADMIN_OWNER:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._read.get(user)
        if cached is not None and now - cached[0] < FRESH:
            return cached[1]
        stored = self.store.get_meta(KEY + user)
        limits: Limits | None = self.default
        if stored:
            limits = Limits(**json.loads(stored))
        if limits == Limits():
            limits = None
        with self._lock:
            self._read[user] = (now, limits)
        return limits

    def set(self, user: str, limits: Limits) -> None:
        self.store.set_meta(KEY + user, limits.stored())
        with self._lock:
            self._read.pop(user, None)

    def for_claim(self, services: Iterable[Service]) -> list[Quota]:
        """The quotas of the owners of `services`, as the store's claim counts them."""
        owned: dict[str, list[Service]] = {}
        for service in services:
            owned.setdefault(service.owner, []).append(service)
        quotas = []
        for owner, theirs in owned.items():
            limits = self.of(owner)
            if limits is not None:
                quotas.append(
                    Quota(
                        owner,
                        {s.name: limits.needs(s) for s in theirs},
                        jobs=limits.jobs,
                        cpu=limits.cpu,
                        memory=limits.memory,
                        gpu=limits.gpu,
                    )
                )
        return quotas

    def shown(self, user: str, services: Iterable[Service]) -> dict[str, Any]:
        """OSCAR's QuotaResponse for `user`: each resource's `max` (-1: no limit) and what
        their running jobs `used`; cpu in millicores and memory in bytes, as OSCAR's."""
        limits = self.of(user) or Limits()
        used = [0, 0.0, 0, 0]
        for service in services:
            if service.owner != user:
                continue
            running = self.store.count_jobs(service.name).get(RUNNING, 0)
            cpu, memory, gpu = limits.needs(service)
            used[0] += running
            used[1] += cpu * running
            used[2] += memory * running
            used[3] += gpu * running

        def most(value: float | int | None, scale: float = 1) -> int:
            return -1 if value is None else round(value * scale)

        return {
            "user_id": user,
            "cluster_queue": f"ondrop-{user}",
            "resources": {
                "cpu": {"max": most(limits.cpu, 1000), "used": round(used[1] * 1000)},
                "memory": {"max": most(limits.memory), "used": int(used[2])},
                "gpu": {"max": most(limits.gpu), "used": int(used[3])},
                "jobs": {"max": most(limits.jobs), "used": int(used[0])},
            },
        }
