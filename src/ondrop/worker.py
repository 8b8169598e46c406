"""What a node runs for a backend: the supervisor, with the node's own runtimes and work
folder and storage providers built from the control plane's configurations, kept for job
after job (warm: storage clients are reused and no interpreter starts per job; only the
user's script is spawned).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ondrop.events.payloads import Payloads
from ondrop.jobs import JobSpec, Report
from ondrop.runtime import build_runtimes, choose_runtime
from ondrop.runtime.base import Runtime
from ondrop.settings import Settings
from ondrop.storage import Providers, build
from ondrop.supervisor import Folders, Ledger, Supervisor

Configs = Mapping[str, Mapping[str, Any]]  # provider name -> its configuration


def node_folder() -> Path:
    """Where this process keeps the work folders of the jobs it runs on this node:
    ONDROP_NODE_DATA, else the temporary folder, one per process (each has its own job
    users and work folders)."""
    base = Path(os.environ.get("ONDROP_NODE_DATA") or tempfile.gettempdir())
    return base / "ondrop-node" / str(os.getpid())


class NodeWorker:
    def __init__(self, configs: Configs, ledger: Ledger, folder: Path | None = None) -> None:
        self.folder = folder or node_folder()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.providers = Providers({name: build(name, config) for name, config in configs.items()})
        # The node's own settings (ONDROP_* in its environment): its container engine,
        # its job uids, whether images may run on the host.
        self.settings = Settings.load(overrides={"data": self.folder})
        self.runtimes: dict[str, Runtime] = build_runtimes(self.settings, self.folder)
        for runtime in self.runtimes.values():
            runtime.clean()
        self.supervisor = Supervisor(
            ledger,
            self.providers,
            lambda service: choose_runtime(
                service, self.runtimes, self.settings.run_images_on_host
            ),
            Folders(self.folder / "work", self.folder / "results"),
            Payloads(self.folder / "payloads"),
        )

    def run(self, spec: JobSpec) -> Report:
        return self.supervisor.run(spec)

    def stop(self, job_id: str) -> None:
        for runtime in self.runtimes.values():
            runtime.stop(job_id)  # each ignores jobs it does not run

    def close(self) -> None:
        for runtime in self.runtimes.values():
            runtime.close()
        self.supervisor.close()
        self.providers.close()


_workers: dict[str, NodeWorker] = {}
_lock = threading.Lock()


def node_worker(configs: Configs, ledger: Ledger) -> NodeWorker:
    """This process's worker for these provider configurations, made once and reused."""
    key = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()
    with _lock:
        worker = _workers.get(key)
        if worker is None:
            worker = _workers[key] = NodeWorker(configs, ledger)
        worker.supervisor.ledger = ledger  # the control plane's relay of now
        return worker


def close_workers() -> None:
    """Close every worker of this process (its supervisor goes)."""
    with _lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.close()
