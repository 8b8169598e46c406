"""The batch pool: jobs wait until the CPU, memory and GPUs they ask for are free, then
run without the faas limits (their own timeout only). GPUs are given whole and never
shared: a job gets devices no other job holds."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import threading
from typing import Any

from ondrop.errors import DefinitionError
from ondrop.fdl.models import Service
from ondrop.pools.base import Admission, Allocation, Node
from ondrop.quantity import format_bytes, parse_cpu
from ondrop.store.base import Job

DEFAULT_MEMORY = 256 * 1024**2  # what a job that names no memory is counted as
BATCH_TIMEOUT = 24 * 3600.0  # seconds, for batch jobs whose service gives none


def detect_gpus(setting: str) -> list[str]:
    """GPU device ids: ONDROP_GPUS (a count, or ids separated by commas), else what
    `nvidia-smi` lists, else none."""
    setting = setting.strip()
    if setting:
        if setting.isdigit():
            return [str(i) for i in range(int(setting))]
        ids = [part.strip() for part in setting.split(",") if part.strip()]
        if not ids:
            raise DefinitionError(f"ONDROP_GPUS={setting!r}: give a count or device ids")
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]


def machine_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


class BatchCapacity(Admission):
    name = "batch"

    def __init__(self, cpus: float, memory: int, gpus: list[str]) -> None:
        self.cpus = cpus or float(os.cpu_count() or 1)
        self.memory = memory or machine_memory()
        self.gpus = list(gpus)
        self._free_cpus = self.cpus
        self._free_memory = self.memory
        self._free_gpus = list(self.gpus)
        self._running = 0
        self._lock = threading.Lock()

    def request(self, service: Service) -> tuple[float, int, int]:
        """(cores, bytes, GPUs) a job of `service` holds while it runs."""
        cpu = parse_cpu(service.cpu) if service.cpu else 1.0
        gpus = service.gpu if self.gpus else 0  # gpu_optional services run on the CPU
        return cpu, service.memory_bytes or DEFAULT_MEMORY, gpus

    def slots(self) -> int:
        # A bound on one claim; the resources decide job by job.
        with self._lock:
            return max(0, int(self.cpus * 4) + len(self.gpus) - self._running)

    def admit(self, job: Job, service: Service) -> Allocation | None:
        cpu, memory, gpus = self.request(service)
        with self._lock:
            # A job bigger than the whole pool would wait forever: it runs alone instead.
            fits_alone = self._running == 0
            if not fits_alone and (cpu > self._free_cpus + 1e-9 or memory > self._free_memory):
                return None
            if gpus > len(self._free_gpus):
                return None
            devices = tuple(self._free_gpus[:gpus])
            del self._free_gpus[:gpus]
            self._free_cpus -= cpu
            self._free_memory -= memory
            self._running += 1
        return dataclasses.replace(self.allocation(service), gpus=devices)

    def allocation(self, service: Service) -> Allocation:
        timeout = float(service.timeout or BATCH_TIMEOUT)
        return Allocation(
            timeout, service.memory_bytes, parse_cpu(service.cpu) if service.cpu else None
        )

    def release(self, allocation: Allocation) -> None:
        cpu = allocation.cpu if allocation.cpu is not None else 1.0
        with self._lock:
            self._free_cpus = min(self.cpus, self._free_cpus + cpu)
            self._free_memory = min(
                self.memory, self._free_memory + (allocation.memory or DEFAULT_MEMORY)
            )
            self._free_gpus = sorted(
                set(self._free_gpus) | set(allocation.gpus), key=self.gpus.index
            )
            self._running -= 1

    def refuse(self, service: Service) -> str | None:
        cpu, memory, gpus = self.request(service)
        if service.gpu and not self.gpus and not service.gpu_optional:
            return (
                f"asks for {service.gpu} GPU(s) and this platform has none; set "
                "`gpu_optional: true` to run it on the CPU when there is no GPU (or "
                "ONDROP_GPUS if the machine has some that were not found)"
            )
        if gpus > len(self.gpus):
            return f"asks for {gpus} GPUs and this platform has {len(self.gpus)}"
        if cpu > self.cpus:
            return f"asks for {cpu:g} CPUs and the batch pool has {self.cpus:g}"
        if memory > self.memory:
            return (
                f"asks for {format_bytes(memory)} of memory and the batch pool has "
                f"{format_bytes(self.memory)}"
            )
        return None

    def nodes(self) -> list[Node]:
        with self._lock:
            return [
                Node(
                    socket.gethostname(),
                    self.cpus,
                    self.memory,
                    len(self.gpus),
                    round(self._free_cpus, 3),
                    self._free_memory,
                )
            ]

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cpus": self.cpus,
                "free_cpus": round(self._free_cpus, 3),
                "memory": format_bytes(self.memory),
                "free_memory": format_bytes(self._free_memory),
                "gpus": self.gpus,
                "free_gpus": list(self._free_gpus),
                "running": self._running,
            }
