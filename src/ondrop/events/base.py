"""Events: what should start a job, and EventSource, the interface of what produces them.

An event names one object version (or one HTTP invocation). The store records it
before anyone acknowledges it and deduplicates it by (source, key, version).
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ondrop.storage.base import ObjectInfo

OBJECT = "object"
INVOKE = "invoke"
COLLECT = "collect"  # all the jobs from one original input have ended (see Intake.collect)
HTTP_SOURCE = "http"
COLLECT_SOURCE = "collect"


@dataclass(frozen=True)
class Event:
    source: str  # provider name ("local.default") or "http" for invocations
    key: str  # object key; for invocations the input file's name
    version: str  # object version (etag, size+mtime); a fresh id for invocations
    kind: str = OBJECT
    time: float = field(default_factory=time.time)
    size: int | None = None
    body: str = ""  # the raw event JSON, what the script gets as $EVENT
    payload: str | None = None  # an invocation's body: its file in the payloads folder
    parent_job: str | None = None  # the job whose output this object is
    id: int | None = None  # given by the store
    # The event of the original input this one descends from (through jobs' outputs);
    # given by the store, the event's own id for an original input.
    origin: int | None = None

    @property
    def iso_time(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_event(
    source: str, key: str, version: str, size: int | None, parent_job: str | None = None
) -> Event:
    """An event for a stored object, with an S3/MinIO-shaped body as OSCAR scripts expect."""
    now = time.time()
    event = Event(source, key, version, OBJECT, now, size, parent_job=parent_job)
    bucket, _, rest = key.partition("/")
    record = {
        "eventVersion": "2.0",
        "eventSource": "ondrop:storage",
        "eventTime": event.iso_time,
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket if rest else "", "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": rest if rest else key, "size": size, "eTag": version},
        },
        "ondrop": {"provider": source, "key": key},
    }
    body = json.dumps({"Key": key, "EventName": record["eventName"], "Records": [record]})
    return Event(source, key, version, OBJECT, now, size, body, parent_job=parent_job)


def invoke_event(payload: str, size: int, name: str = "event-file", body: str = "") -> Event:
    """An event for an HTTP invocation: the body kept as `payload` becomes the input file
    called `name`."""
    return Event(HTTP_SOURCE, name, uuid.uuid4().hex, INVOKE, size=size, body=body, payload=payload)


def collect_event(collector: str, origin: Event) -> Event:
    """The event that runs `collector` once for the original input `origin`, after every
    job that descends from it has ended. Its key is the original input's, so that the
    collector's job shows what it is about."""
    assert origin.id is not None
    body = json.dumps({"collect": {"provider": origin.source, "key": origin.key}})
    return Event(
        COLLECT_SOURCE,
        origin.key,
        f"{collector}@{origin.id}",
        COLLECT,
        body=body,
        origin=origin.id,
    )


def event_json(event: Event) -> dict[str, Any]:
    if event.body:
        try:
            parsed = json.loads(event.body)
            if isinstance(parsed, dict):
                return parsed
        except ValueError:
            pass
    return {}


# What an event source hands new object versions to (provider name, objects), a batch at a
# time: it returns once their events are durably recorded, so the source may move on.
Sink = Callable[[str, "list[ObjectInfo]"], object]


class EventSource(ABC):
    """Turns objects appearing in a store into calls of a sink; start() and stop()."""

    @abstractmethod
    def start(self, sink: Sink) -> None:
        """Begin delivering events to `sink` (also those that happened while stopped)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering; returns when no more calls to the sink are under way."""
