"""/system/metrics: OSCAR's use of services over a span of time (usage.py), and ondrop's
/system/history: the last minutes of jobs, as the dashboard plots them (history.py); for
the admin (every service) or a signed-in user (the services they may use)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from ondrop.access import may_see, seen
from ondrop.api.deps import PlatformDep, SignedIn
from ondrop.api.openapi import errors
from ondrop.errors import DefinitionError
from ondrop.history import WINDOW_MAX, history
from ondrop.platform import Platform
from ondrop.usage import Metrics, breakdown_csv, span

router = APIRouter(
    tags=["metrics"],
    responses=errors(
        401, 403, 422, 500, why={422: "a time, group_by, format or metric it has not"}
    ),
)

Start = Annotated[
    str | None, Query(description="RFC 3339; default 24 hours before `end`", max_length=64)
]
End = Annotated[str | None, Query(description="RFC 3339; default now", max_length=64)]


async def _metrics(
    platform: Platform, who: Any, start: str | None, end: str | None, *only: str
) -> Metrics:
    since, until = span(start, end)
    services = [s for s in platform.services.all() if may_see(s, who)]
    if only:
        services = [seen(platform.services.get(only[0]), who)]
    requests = list(platform.exposed.requests)
    return await run_in_threadpool(Metrics, platform.store, services, requests, since, until)


@router.get("/system/metrics")
async def summary(
    platform: PlatformDep, who: SignedIn, start: Start = None, end: End = None
) -> dict[str, Any]:
    """OSCAR's summary: services, CPU and GPU hours, requests (sync, async, exposed)."""
    return (await _metrics(platform, who, start, end)).summary()


@router.get("/system/metrics/breakdown", response_model=None)
async def breakdown(
    platform: PlatformDep,
    who: SignedIn,
    group_by: Annotated[str, Query(description="`service` (ondrop records no users)")],
    start: Start = None,
    end: End = None,
    format: Annotated[str, Query(description="`json` or `csv`")] = "json",
    include_users: Annotated[bool, Query(description="OSCAR's; no users are recorded")] = False,
) -> Response | dict[str, Any]:
    """OSCAR's breakdown by service: its requests, sync, async and exposed."""
    if format.lower() not in ("json", "csv"):
        raise DefinitionError(f"format: {format!r} is not json or csv")
    answer = (await _metrics(platform, who, start, end)).breakdown(group_by)
    if format.lower() == "csv":
        return PlainTextResponse(breakdown_csv(answer), media_type="text/csv")
    return answer


@router.get("/system/metrics/{service}", responses=errors(404))
async def service_metrics(
    service: str,
    platform: PlatformDep,
    who: SignedIn,
    start: Start = None,
    end: End = None,
    metric: Annotated[str | None, Query(description="one of OSCAR's keys; default all")] = None,
) -> dict[str, Any]:
    """One service's metrics (OSCAR's per-service list), or the one `metric` asked for."""
    return (await _metrics(platform, who, start, end, service)).value(service, metric)


@router.get("/system/history")
async def recent(
    platform: PlatformDep,
    who: SignedIn,
    minutes: Annotated[int, Query(ge=1, le=WINDOW_MAX, description="default 60")] = 60,
) -> dict[str, Any]:
    """The last `minutes` of jobs, minute by minute (ondrop): `{minutes: [{start,
    succeeded, failed, cancelled, started, queued}], wait_seconds: {p50, p90, p99},
    run_seconds: {...}, jobs}`: the jobs that ended, started and waited in each minute
    (`start` in seconds since the epoch), and the percentiles of landing-to-start and run
    time of the jobs that ended in the window (null when none did)."""
    names = [s.name for s in platform.services.all() if may_see(s, who)]
    return await run_in_threadpool(history, platform.store, names, minutes, time.time())
