"""The router: which pool a new job goes to, from its service's mode."""

from __future__ import annotations

from ondrop.events.base import Event
from ondrop.fdl.models import Service
from ondrop.quantity import parse_bytes

FAAS = "faas"
BATCH = "batch"


class Router:
    def __init__(self, gpus: bool = False) -> None:
        self.gpus = gpus  # does the platform have any

    def pool_for(self, service: Service, event: Event) -> str:
        """`batch` for batch services and for jobs that get a GPU; hybrid services start
        on faas, or on batch when the input is larger than their `batch_above`."""
        if service.mode == "batch" or (service.gpu and self.gpus):
            return BATCH
        limit = parse_bytes(service.batch_above) if service.batch_above else None
        big = limit is not None and event.size is not None and event.size > limit
        return BATCH if service.mode == "hybrid" and big else FAAS
