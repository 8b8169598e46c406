"""Runtimes by name: `process` always, `container` when a container engine is found."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ondrop.errors import DefinitionError
from ondrop.fdl.models import Service
from ondrop.runtime.base import Runtime
from ondrop.runtime.container import ContainerRuntime
from ondrop.runtime.engine import detect
from ondrop.runtime.images import Images
from ondrop.runtime.oci import IdMap, OciRuntime, find_oci_runtime, probe
from ondrop.runtime.process import Isolation, JobUsers, ProcessRuntime, interpreter_folders
from ondrop.runtime.spawner import Spawner
from ondrop.settings import Settings

log = logging.getLogger(__name__)


def choose_runtime(
    service: Service, runtimes: Mapping[str, Runtime], run_images_on_host: bool
) -> Runtime | str:
    """The runtime of `runtimes` that runs `service`'s jobs, or why none can."""
    chosen = service.runtime
    if chosen is None:
        if not service.image:
            chosen = "process"
        elif "container" in runtimes:
            chosen = "container"
        elif run_images_on_host:
            chosen = "process"
        else:
            return (
                f"service {service.name!r} names the image {service.image!r} but this "
                "platform has no container engine, so it cannot run it; set `runtime: "
                "process` on the service (or ONDROP_RUN_IMAGES_ON_HOST=true) to run the "
                "script on the host instead"
            )
    runtime = runtimes.get(chosen)
    if runtime is None:
        return f"the {chosen} runtime is not available on this platform"
    return runtime


def build_runtimes(settings: Settings, data: Path) -> dict[str, Runtime]:
    process = process_runtime(settings, data)
    runtimes: dict[str, Runtime] = {"process": process}
    engine = detect(settings.container_engine)
    if engine is None:
        return runtimes
    # Containers are named after this data folder, so two platforms never touch each
    # other's, and a restarted one finds what it left; their user namespace's host ids are
    # chosen by it too.
    tag = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:8]
    prefix = f"ondrop-{tag}-"
    idmap, problem = None, None
    if os.geteuid() == 0:
        try:
            idmap = IdMap.claim(int(tag, 16))
        except OSError as exc:
            idmap, problem = IdMap.auto(int(tag, 16)), f"no block of host ids: {exc}"
        problem = problem or idmap.problem()
    if idmap is not None and process.isolation is not None:
        jobs = process.isolation.users.uids
        if jobs.start < idmap.host + idmap.count and idmap.host < jobs.stop:
            problem = (
                f"the containers' host ids {idmap} overlap the job uids {process.isolation.users}"
            )
    images = Images(engine, data / "images", settings.pull, prefix, idmap)
    oci = None
    if problem is None:
        oci, problem = _oci_runtime(settings.oci_runtime, images, idmap)
    runtimes["container"] = ContainerRuntime(engine, images, oci, prefix, idmap, problem or "")
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


def _oci_runtime(
    choice: str, images: Images, idmap: IdMap | None
) -> tuple[OciRuntime | None, str | None]:
    """The OCI runtime that starts containers (in a user namespace of `idmap`), or None for
    the engine's `run`; and why no container may run, when the runtimes here start them,
    but not in a user namespace (the engine's would not either)."""
    choice = choice.strip().lower() or "auto"
    if choice == "none":
        return None, None
    if os.geteuid() != 0 or idmap is None:
        log.info("not root: containers are started by the engine, not the OCI runtime")
        return None, None
    try:  # where the runtime, as the container's root, can enter to set the root up
        scratch = images.reachable(images.folder / ".probe")
        scratch.mkdir(mode=0o711, exist_ok=True)
    except OSError as exc:
        log.warning("no way in to unpacked images (%s): containers are started by the engine", exc)
        return None, None
    unshared = []
    for name in ["crun", "runc"] if choice == "auto" else [choice]:
        runtime = find_oci_runtime(name)
        if runtime is None:
            continue
        problem = probe(runtime, scratch, idmap)
        if problem is None:
            return runtime, None
        log.warning("%s cannot start containers in a user namespace here (%s)", name, problem)
        if probe(runtime, scratch) is None:
            unshared.append(f"{name} starts containers, but not in a user namespace: {problem}")
    if unshared:
        return None, "; ".join(unshared)
    log.warning("no usable OCI runtime: containers are started by the engine (slower)")
    return None, None


__all__ = ["ContainerRuntime", "ProcessRuntime", "Runtime", "build_runtimes"]
