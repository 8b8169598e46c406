"""Containers kept ready: a service's `synchronous.min_scale` (OSCAR's Knative pods kept
for /run) as that many warm containers of its jobs on this machine, started at apply,
replaced when one goes, dropped when the service changes or goes.

A kept container must be the one the service's next job asks for (the same image, limits
and network), so it is made for the jobs of the service's first pool, where that pool's
jobs run here; a service with GPUs has none kept (its devices are the job's own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ondrop.fdl.models import Service
from ondrop.pools.base import Allocation
from ondrop.runtime.base import RunSpec, Runtime
from ondrop.services import Services

log = logging.getLogger(__name__)

LOOK = 10.0  # seconds between looks at the services (another control plane may change them)


class Ready:
    """Keeps each service's containers kept ready on the runtime of its jobs."""

    def __init__(
        self,
        services: Services,
        runtime_for: Callable[[Service], Runtime | str],
        allocation: Callable[[Service], Allocation | None],
        work: Path,
    ) -> None:
        self.services = services
        self.runtime_for = runtime_for
        self.allocation = allocation
        self.work = work
        self._kept: dict[str, tuple[Runtime, RunSpec, int]] = {}
        self._said: dict[str, str] = {}  # the problem last logged, by service
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ondrop-ready", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look now: services were applied or removed."""
        with self._lock:
            self._wake.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            try:
                self._look()
            except Exception:  # one bad look must not end the thread
                log.exception("could not look after the containers kept ready")
            with self._lock:
                if self._closed:
                    return
                self._wake.wait(LOOK)
                if self._closed:
                    return

    def _look(self) -> None:
        self.services.catch_up()
        wanted: dict[str, tuple[Runtime, RunSpec, int]] = {}
        for service in self.services.all():
            kept = self._wanted(service)
            if kept is not None:
                wanted[service.name] = kept
        for name, (runtime, spec, _) in list(self._kept.items()):
            if name not in wanted:
                runtime.keep_ready(spec, 0)
                del self._kept[name]
                self._said.pop(name, None)
        for name, (runtime, spec, count) in wanted.items():
            before = self._kept.get(name)
            if before is not None and before[0] is not runtime:
                before[0].keep_ready(before[1], 0)
            # Asked each look: the image its name stands for may have changed meanwhile.
            problem = runtime.keep_ready(spec, count)
            if problem is None:
                self._kept[name] = (runtime, spec, count)
                self._said.pop(name, None)
            else:
                self._kept.pop(name, None)  # tried again at the next look
                if self._said.get(name) != problem:
                    self._said[name] = problem
                    log.warning("service %s: no containers kept ready: %s", name, problem)

    def _wanted(self, service: Service) -> tuple[Runtime, RunSpec, int] | None:
        count = service.synchronous.min_scale
        if not count or not service.image or service.gpu or service.expose is not None:
            return None
        runtime = self.runtime_for(service)
        allocation = self.allocation(service)
        if isinstance(runtime, str) or allocation is None:
            return None
        folder = self.work / f"ready-{service.name}"  # never made: its parent holds them
        spec = RunSpec(
            job_id=f"ready-{service.name}",
            script=folder / "script",
            workdir=folder,
            env={},
            timeout=allocation.timeout,
            log=folder / "log",
            image=service.image,
            memory=allocation.memory,
            cpu=allocation.cpu,
            network=service.network,
            service=service.name,
            warm=service.kept_warm,
        )
        return runtime, spec, count
