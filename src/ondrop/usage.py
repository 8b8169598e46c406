"""What services used over a span of time, in the shapes of OSCAR's /system/metrics.

CPU and GPU hours are the time the jobs' attempts ran within the span (one still
running, up to now), times the cores and GPUs their service declares now (one core
where it declares none); requests are the jobs made in the span, synchronous (`/run`)
or not (`/job`, files, chains), from the store; requests to exposed services are this
control plane's, its last 10,000. Who invoked a service, and from where, ondrop does
not record: the user and country metrics are 0, and their source says so. Jobs removed are
no longer counted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ondrop.errors import DefinitionError
from ondrop.fdl.models import Service
from ondrop.quantity import parse_cpu
from ondrop.store.base import Store, Usage

METRICS = {  # OSCAR's metric keys, and their units
    "services-count": "services",
    "cpu-hours": "cpu-hours",
    "gpu-hours": "gpu-hours",
    "requests-sync-per-service": "requests",
    "requests-async-per-service": "requests",
    "requests-exposed-per-service": "requests",
    "requests-per-user": "requests",
    "users-per-service": "users",
    "countries-count": "countries",
    "countries-list": "countries",
}
SERVICE_METRICS = (  # what GET /system/metrics/{service} lists, as OSCAR's
    "cpu-hours",
    "gpu-hours",
    "requests-sync-per-service",
    "requests-async-per-service",
    "requests-exposed-per-service",
    "users-per-service",
)
SOURCES = [
    {"name": "jobs", "status": "ok", "notes": "the store's jobs and attempts"},
    {
        "name": "exposed",
        "status": "partial",
        "notes": "requests to exposed services this control plane passed on, its last 10,000",
    },
    {
        "name": "users",
        "status": "unavailable",
        "notes": "ondrop does not record who invokes a service, nor from where",
    },
]


def span(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """OSCAR's `start` and `end` (RFC 3339): the last 24 hours up to `end` (now) by
    default."""

    def parsed(text: str, name: str) -> datetime:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise DefinitionError(
                f"{name}: {text!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z"
            ) from None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    until = parsed(end, "end") if end else datetime.now(UTC)
    since = parsed(start, "start") if start else until - timedelta(hours=24)
    if until < since:
        raise DefinitionError(f"end ({end or 'now'}) is before start ({start})")
    return since, until


class Metrics:
    """The use of `services` from `start` to `end`."""

    def __init__(
        self,
        store: Store,
        services: Iterable[Service],
        exposed: Iterable[tuple[float, str]],
        start: datetime,
        end: datetime,
    ) -> None:
        self.start, self.end = start, end
        self.services = {s.name: s for s in services}
        low, high = start.timestamp(), end.timestamp()
        used = {u.service: u for u in store.usage(low, high) if u.service in self.services}
        self.used = {name: used.get(name, Usage(name)) for name in self.services}
        self.exposed: dict[str, int] = dict.fromkeys(self.services, 0)
        for when, name in list(exposed):
            if low <= when < high and name in self.exposed:
                self.exposed[name] += 1

    def _hours(self, name: str, gpu: bool) -> float:
        service, seconds = self.services[name], self.used[name].seconds
        each = float(service.gpu) if gpu else parse_cpu(service.cpu) if service.cpu else 1.0
        return round(seconds * each / 3600, 6)

    def _value(self, name: str, metric: str) -> float:
        used = self.used[name]
        return {
            "services-count": 1.0,
            "cpu-hours": self._hours(name, gpu=False),
            "gpu-hours": self._hours(name, gpu=True),
            "requests-sync-per-service": float(used.sync),
            "requests-async-per-service": float(used.asynchronous),
            "requests-exposed-per-service": float(self.exposed[name]),
        }.get(metric, 0.0)

    def _times(self) -> dict[str, str]:
        return {"start": _shown(self.start), "end": _shown(self.end)}

    def summary(self) -> dict[str, Any]:
        sync = sum(u.sync for u in self.used.values())
        other = sum(u.asynchronous for u in self.used.values())
        exposed = sum(self.exposed.values())
        active = [n for n, u in self.used.items() if u.sync or u.asynchronous or u.seconds]
        totals = {
            "services_count_active": len({*active, *(n for n, c in self.exposed.items() if c)}),
            "services_count_total": len(self.services),
            "cpu_hours_total": round(sum(self._hours(n, False) for n in self.services), 6),
            "gpu_hours_total": round(sum(self._hours(n, True) for n in self.services), 6),
            "requests_count_total": sync + other + exposed,
            "requests_count_sync": sync,
            "requests_count_async": other,
            "requests_count_exposed": exposed,
            "countries_count": 0,
            "countries": [],
            "users_count": 0,
            "users": [],
        }
        return {**self._times(), "totals": totals, "sources": SOURCES}

    def breakdown(self, group_by: str) -> dict[str, Any]:
        if group_by.strip().lower() != "service":
            raise DefinitionError(
                f"group_by: {group_by!r}: ondrop breaks its metrics down by service only "
                "(it does not record who invokes a service)"
            )
        items = []
        for name, used in self.used.items():
            items.append(
                {
                    "key": name,
                    "requests_count_total": used.sync + used.asynchronous + self.exposed[name],
                    "requests_count_sync": used.sync,
                    "requests_count_async": used.asynchronous,
                    "requests_count_exposed": self.exposed[name],
                    "unique_users_count": 0,
                    "countries": [],
                }
            )
        return {**self._times(), "group_by": "service", "items": items}

    def value(self, name: str, metric: str | None) -> dict[str, Any]:
        """One metric of the service `name`, or (None) all of OSCAR's per-service ones."""
        if metric is None:
            return {
                "service_name": name,
                **self._times(),
                "metrics": [self._one(name, m) for m in SERVICE_METRICS],
            }
        if metric not in METRICS:
            raise DefinitionError(f"metric: {metric!r} is not one of OSCAR's: {', '.join(METRICS)}")
        return {"service_id": name, **self._one(name, metric), **self._times()}

    def _one(self, name: str, metric: str) -> dict[str, Any]:
        return {
            "metric": metric,
            "value": self._value(name, metric),
            "unit": METRICS[metric],
            "sources": SOURCES,
        }


def breakdown_csv(answer: dict[str, Any]) -> str:
    """A breakdown as OSCAR's CSV export writes it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = ["requests_count_total", "requests_count_sync", "requests_count_async"]
    fields += ["requests_count_exposed", "unique_users_count"]
    writer.writerow(["key", "membership", *fields, "countries"])
    for item in answer["items"]:
        writer.writerow([item["key"], "", *(item[f] for f in fields), ""])
    return out.getvalue()


def _shown(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
