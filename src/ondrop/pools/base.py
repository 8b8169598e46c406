"""What the pools share: the Admission interface (which queued job may start now, with
what), and the Allocation a job runs with."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ondrop.fdl.models import Service
from ondrop.store.base import Job


@dataclass(frozen=True)
class Allocation:
    """What one job of a pool runs with: its limits and devices."""

    timeout: float  # seconds
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    gpus: tuple[str, ...] = field(default_factory=tuple)  # device ids, exclusively its own
    # GPUs as a count, where the node that runs the job picks them (a cluster); None: as
    # many as `gpus` names
    gpu_count: int | None = None

    @property
    def gpu_total(self) -> int:
        return len(self.gpus) if self.gpu_count is None else self.gpu_count


@dataclass(frozen=True)
class Node:
    """A machine jobs run on, and what it has: for /system/status and the dashboard."""

    name: str
    cpus: float
    memory: int  # bytes
    gpus: int = 0
    free_cpus: float | None = None  # None: not known here (a cluster's other nodes)
    free_memory: int | None = None


class Admission(ABC):
    """A pool's rule for starting jobs: how many may run, and what each one gets."""

    name: str = ""
    # Whether every job fits while slots() says there is room (a count, as faas's): its
    # jobs are then claimed with nothing asked of each, in one trip to a shared store.
    counted: bool = False

    @abstractmethod
    def slots(self) -> int:
        """How many more jobs could start now, at most."""

    @abstractmethod
    def admit(self, job: Job, service: Service) -> Allocation | None:
        """Reserve what `job` needs and say what it runs with; None when it must wait."""

    @abstractmethod
    def release(self, allocation: Allocation) -> None:
        """Give back what an admitted job held."""

    @abstractmethod
    def refuse(self, service: Service) -> str | None:
        """Why this pool could never run `service`'s jobs (at apply), or None."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Capacity and use, for `ondrop status`."""

    def allocation(self, service: Service) -> Allocation | None:
        """What every job of `service` runs with, devices aside (its limits), where that
        is known ahead; None where it is not."""
        return None

    def nodes(self) -> list[Node]:
        """The machines this pool's jobs run on, where it knows them."""
        return []


class Slots:
    """The platform's limit on scripts running at once, shared by its pools.

    A job holds a slot while its script runs (take, give) and stays in flight until its
    outputs are stored and its end recorded (done): the next script starts meanwhile,
    with at most as many jobs again finishing behind the running ones."""

    def __init__(self, total: int) -> None:
        import threading

        self.total = total
        self._used = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._used >= self.total or self._in_flight >= 2 * self.total:
                return False
            self._used += 1
            self._in_flight += 1
            return True

    def give(self) -> None:
        with self._lock:
            self._used -= 1

    def done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def free(self) -> int:
        with self._lock:
            return min(self.total - self._used, 2 * self.total - self._in_flight)
