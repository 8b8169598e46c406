"""From a claimed job to its JobSpec: what the control plane knows (the store, the services)
written down, so that any node can run the job without asking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ondrop.errors import NotFoundError
from ondrop.events.base import COLLECT, HTTP_SOURCE, INVOKE, OBJECT
from ondrop.fdl.models import Service
from ondrop.jobs import SYNC_PRIORITY, JobSpec, ObjectRef, Resources, Staged
from ondrop.pools.base import Allocation
from ondrop.store.base import Claim, Store


def job_spec(store: Store, claim: Claim, service: Service, allocation: Allocation) -> JobSpec:
    """The JobSpec of `claim`'s attempt. NotFoundError when a collecting job's original
    input is no longer recorded."""
    job, event = claim.job, claim.event
    resources = Resources(
        allocation.timeout, allocation.memory, allocation.cpu, allocation.gpu_total
    )
    manifest: dict[str, Any] | None = None
    manifest_name = ""
    inputs: tuple[Staged, ...] = ()
    if event.kind == COLLECT and service.collect:
        inputs, manifest, manifest_name = _family(store, claim, service)
    elif event.kind == OBJECT:
        inputs = (Staged(ObjectRef(event.source, event.key), Path(event.key).name),)
    elif event.payload is not None:
        inputs = (Staged(ObjectRef(HTTP_SOURCE, event.payload), event.key or "event-file"),)
    return JobSpec(
        job_id=job.id,
        attempt=claim.attempt,
        pool=job.pool,
        service=service,
        event=event,
        resources=resources,
        inputs=inputs,
        manifest=manifest,
        manifest_name=manifest_name,
        keep_results=event.kind == INVOKE and job.priority >= SYNC_PRIORITY,
        devices=allocation.gpus,
    )


def _family(
    store: Store, claim: Claim, service: Service
) -> tuple[tuple[Staged, ...], dict[str, Any], str]:
    """A collecting job's inputs: the outputs of the jobs of `after` in the family of one
    original input, and a manifest of the whole family (`<input's name>.json`)."""
    event = claim.event
    origin = store.event(event.origin) if event.origin is not None else None
    if origin is None or origin.id is None:
        raise NotFoundError("the original input's record is gone")
    family = [j for j in store.family(origin.id) if j.service != service.name]
    after = service.collect
    manifest_name = f"{Path(origin.key).name}.json"
    used = {manifest_name}
    staged: list[Staged] = []
    names: dict[str, list[str]] = {}
    for job_id, source, key in store.outputs([j.id for j in family if j.service == after]):
        name = Path(key).name
        while name in used:  # the same name from two jobs: number the later ones
            name = f"{len(used)}-{Path(key).name}"
        used.add(name)
        staged.append(Staged(ObjectRef(source, key), name))
        names.setdefault(job_id, []).append(name)
    manifest = {
        "input": {"provider": origin.source, "key": origin.key},
        "collected": after,
        "jobs": [
            {
                "id": j.id,
                "service": j.service,
                "status": j.status,
                "input": j.input_key,
                "files": names.get(j.id, []),
            }
            for j in family
        ],
    }
    return tuple(staged), manifest, manifest_name
