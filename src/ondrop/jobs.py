"""The values that cross machines: what a job is to run (JobSpec) and how it ended (Report,
with a typed Cause). Frozen, JSON-able, and free of anything that lives in one process:
the control plane builds a JobSpec, a backend carries it to a node, the node's supervisor
runs it and answers a Report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ondrop.events.base import Event
from ondrop.storage.base import ObjectInfo

if TYPE_CHECKING:
    from ondrop.fdl.models import Service
    from ondrop.store.base import Outcome

SYNC_PRIORITY = 10  # jobs a client waits for (/run) go first; their outputs are kept for it


class Cause(StrEnum):
    """Why an attempt did not succeed: what the retry and fallback policy decides on (never
    the reason's text, which is for people)."""

    EXIT = "exit"  # the script exited non-zero
    TIMEOUT = "timeout"  # it ran past its time limit
    OOM = "oom"  # the kernel killed it for its memory limit
    STOPPED = "stopped"  # the platform stopped it (shutdown, cancel, its spawner died)
    UNAVAILABLE = "unavailable"  # a store, provider or disk it needed was not there
    LOST = "lost"  # the node that ran it was lost
    INPUT_GONE = "input_gone"  # its input was deleted before it could be staged
    INTERNAL = "internal"  # the platform could not run it (a runtime, a bug)

    @property
    def counts(self) -> bool:
        """Whether an attempt that ended so uses up one of the service's retries: not when
        it was no fault of the job's (the platform stopped it, a store was down, its node
        was lost), which is tried again without counting."""
        return self not in _NOT_COUNTED

    @property
    def outgrown(self) -> bool:
        """Whether a hybrid job that ended so on the faas pool goes on to batch."""
        return self in (Cause.TIMEOUT, Cause.OOM)


_NOT_COUNTED = frozenset({Cause.STOPPED, Cause.UNAVAILABLE, Cause.LOST})


@dataclass(frozen=True)
class Resources:
    """What one job runs with, as counts (the node that runs it picks the devices)."""

    timeout: float  # seconds
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    gpus: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "memory": self.memory, "cpu": self.cpu, "gpus": self.gpus}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resources:
        return cls(float(data["timeout"]), data.get("memory"), data.get("cpu"), data.get("gpus", 0))


@dataclass(frozen=True)
class ObjectRef:
    """An object in a storage provider."""

    provider: str
    key: str


@dataclass(frozen=True)
class Staged:
    """One file a job's input folder receives: the object, and its name there."""

    ref: ObjectRef
    name: str


@dataclass(frozen=True)
class JobSpec:
    """Everything one attempt of a job needs, on any node, with no store: the service, the
    event, what it runs with, and the files its input folder receives."""

    job_id: str
    attempt: int
    pool: str
    service: Service
    event: Event
    resources: Resources
    inputs: tuple[Staged, ...]  # the first is the input file, unless there is a manifest
    # A collecting job's manifest (the family of one original input, as JSON), written as
    # its input file `manifest_name`; the files that could not be staged are left out.
    manifest: dict[str, Any] | None = None
    manifest_name: str = ""
    keep_results: bool = False  # a client waits for this job's outputs (/run)
    # Where a node that is not the control plane's machine stores those outputs and the
    # log for it (a prefix in a provider both reach); None: in the results folder here.
    results_to: ObjectRef | None = None
    # GPU ids the control plane chose, for a backend on its own machine (local); empty on a
    # cluster, where the node that runs the job picks them.
    devices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "pool": self.pool,
            "service": self.service.model_dump(mode="json", exclude={"token"}),
            "event": dataclasses.asdict(self.event),
            "resources": self.resources.to_json(),
            "inputs": [[s.ref.provider, s.ref.key, s.name] for s in self.inputs],
            "manifest": self.manifest,
            "manifest_name": self.manifest_name,
            "keep_results": self.keep_results,
            "results_to": None
            if self.results_to is None
            else [self.results_to.provider, self.results_to.key],
            "devices": list(self.devices),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        from ondrop.fdl.models import Service

        return cls(
            job_id=data["job_id"],
            attempt=int(data["attempt"]),
            pool=data["pool"],
            service=Service.model_validate(data["service"], context={"stored": True}),
            event=Event(**data["event"]),
            resources=Resources.from_json(data["resources"]),
            inputs=tuple(Staged(ObjectRef(p, k), n) for p, k, n in data["inputs"]),
            manifest=data.get("manifest"),
            manifest_name=data.get("manifest_name", ""),
            keep_results=bool(data.get("keep_results")),
            results_to=ObjectRef(*data["results_to"]) if data.get("results_to") else None,
            devices=tuple(data.get("devices", ())),
        )


@dataclass(frozen=True)
class Report:
    """How one attempt ended, and the outputs it stored (provider, object), in order."""

    job_id: str
    attempt: int
    outcome: Outcome
    outputs: tuple[tuple[str, ObjectInfo], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "outcome": dataclasses.asdict(self.outcome),
            "outputs": [[name, dataclasses.asdict(info)] for name, info in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        from ondrop.store.base import Outcome

        outcome = dict(data["outcome"])
        cause = outcome.pop("cause", None)
        return cls(
            job_id=data["job_id"],
            attempt=int(data["attempt"]),
            outcome=Outcome(**outcome, cause=Cause(cause) if cause else None),
            outputs=tuple((name, ObjectInfo(**info)) for name, info in data["outputs"]),
        )
