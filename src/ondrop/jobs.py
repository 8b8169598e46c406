"""The values that cross machines: what a job is to run (JobSpec) and how it ended (Report,
with a typed Cause). Frozen, JSON-able, and free of anything that lives in one process:
the control plane builds a JobSpec, a backend carries it to a node, the node's supervisor
runs it and answers a Report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
class StoredOutput:
    """An output a job stored: where, and its size and version as the store answered."""

    provider: str
    key: str
    size: int
    etag: str = ""
    version: str = ""
    mtime: float = 0.0


@dataclass(frozen=True)
class Devices:
    """GPUs a node gave a job: their ids there, exclusively its own while it runs."""

    gpus: tuple[str, ...] = field(default_factory=tuple)
