"""/metrics: the platform's Prometheus metrics (ondrop/telemetry.py), for the admin: a
scrape config gives Prometheus the admin's basic credentials (docs/metrics.md)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ondrop.api.deps import Admin, PlatformDep
from ondrop.api.openapi import errors
from ondrop.telemetry import CONTENT_TYPE

router = APIRouter(tags=["system"], responses=errors(401, 403, 500))


@router.get(
    "/metrics",
    dependencies=[Admin],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus's text format"}},
)
def prometheus_metrics(platform: PlatformDep) -> Response:
    """Jobs started, succeeded and failed; run and wait times; jobs queued and running;
    storage errors; HTTP requests. The series are in docs/metrics.md."""
    return Response(platform.telemetry.exposition(), media_type=CONTENT_TYPE)
