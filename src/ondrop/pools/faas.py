"""The faas pool: many short jobs at once, each held to the platform's limits (like AWS
Lambda: 900 s and 10 GiB by default). Jobs start as soon as a slot is free."""

from __future__ import annotations

import threading
from typing import Any

from ondrop.fdl.models import Service
from ondrop.pools.base import Admission, Allocation
from ondrop.quantity import format_bytes, parse_cpu
from ondrop.store.base import Job


class FaasLimits(Admission):
    name = "faas"
    counted = True

    def __init__(self, concurrency: int, max_timeout: float, max_memory: int) -> None:
        self.concurrency = concurrency
        self.max_timeout = max_timeout
        self.max_memory = max_memory
        self._running = 0
        self._lock = threading.Lock()

    def slots(self) -> int:
        with self._lock:
            return self.concurrency - self._running

    def allocation(self, service: Service) -> Allocation:
        timeout = min(float(service.timeout or self.max_timeout), self.max_timeout)
        memory = min(service.memory_bytes or self.max_memory, self.max_memory)
        cpu = parse_cpu(service.cpu) if service.cpu else None
        return Allocation(timeout, memory, cpu)

    def admit(self, job: Job, service: Service) -> Allocation | None:
        with self._lock:
            if self._running >= self.concurrency:
                return None
            self._running += 1
        return self.allocation(service)

    def release(self, allocation: Allocation) -> None:
        with self._lock:
            self._running -= 1

    def refuse(self, service: Service) -> str | None:
        return None  # anything starts here; the limits cut it short

    def describe(self) -> dict[str, Any]:
        with self._lock:
            running = self._running
        return {
            "concurrency": self.concurrency,
            "running": running,
            "max_timeout": self.max_timeout,
            "max_memory": format_bytes(self.max_memory),
        }
