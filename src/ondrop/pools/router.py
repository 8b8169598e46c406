"""The router: which pool a new job goes to, from its service's mode."""

from __future__ import annotations

from ondrop.events.base import Event
from ondrop.fdl.models import Service

FAAS = "faas"
BATCH = "batch"


class Router:
    def pool_for(self, service: Service, event: Event) -> str:
        """`batch` for batch services, else `faas` (hybrid services start there)."""
        return BATCH if service.mode == "batch" else FAAS
