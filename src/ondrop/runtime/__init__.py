"""Runtimes by name: `process` always, `container` when a container engine is found."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ondrop.errors import DefinitionError
from ondrop.runtime.base import Runtime
from ondrop.runtime.container import ContainerRuntime
from ondrop.runtime.engine import detect
from ondrop.runtime.images import Images
from ondrop.runtime.oci import OciRuntime, find_oci_runtime, probe
from ondrop.runtime.process import Isolation, JobUsers, ProcessRuntime, interpreter_folders
from ondrop.runtime.spawner import Spawner
from ondrop.settings import Settings

log = logging.getLogger(__name__)


def build_runtimes(settings: Settings, data: Path) -> dict[str, Runtime]:
    runtimes: dict[str, Runtime] = {"process": process_runtime(settings, data)}
    engine = detect(settings.container_engine)
    if engine is None:
        return runtimes
    oci = _oci_runtime(settings.oci_runtime, data / "tmp")
    # Containers are named after this data folder, so two platforms never touch each
    # other's, and a restarted one finds what it left.
    tag = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:8]
    prefix = f"ondrop-{tag}-"
    images = Images(engine, data / "images", settings.pull, prefix)
    runtimes["container"] = ContainerRuntime(engine, images, oci, prefix)
    return runtimes


def process_runtime(settings: Settings, data: Path) -> ProcessRuntime:
    """As root, jobs run isolated: each as a job user of its own, started by a spawner
    that hides the data folder (but the work folders) from them."""
    if os.geteuid() != 0:
        return ProcessRuntime()
    try:
        users = JobUsers.parse(settings.job_uids, data)
    except ValueError as exc:
        raise DefinitionError(f"setting ONDROP_JOB_UIDS: {exc}") from None
    work = data / "work"
    work.mkdir(parents=True, exist_ok=True)
    spawner = Spawner(hide=[data], show=[work, *interpreter_folders()])
    return ProcessRuntime(Isolation(spawner, users))


def _oci_runtime(choice: str, scratch: Path) -> OciRuntime | None:
    choice = choice.strip().lower() or "auto"
    if choice == "none":
        return None
    if os.geteuid() != 0:
        log.info("not root: containers are started by the engine, not the OCI runtime")
        return None
    for name in ["crun", "runc"] if choice == "auto" else [choice]:
        runtime = find_oci_runtime(name)
        if runtime is None:
            continue
        scratch.mkdir(parents=True, exist_ok=True)
        problem = probe(runtime, scratch)
        if problem is None:
            return runtime
        log.warning("%s cannot start containers here (%s)", name, problem)
    log.warning("no usable OCI runtime: containers are started by the engine (slower)")
    return None


__all__ = ["ContainerRuntime", "ProcessRuntime", "Runtime", "build_runtimes"]
