"""Intake: an event comes in, the services it starts are found, and event and jobs are
recorded in one transaction before anyone is told "accepted".

Every source of work goes through here: the folder watcher, uploads, outputs of
other jobs (chains) and HTTP invocations.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from ondrop.events.base import Event, collect_event, invoke_event, object_event
from ondrop.pools.router import Router
from ondrop.services import Services
from ondrop.storage import Providers
from ondrop.storage.base import ObjectInfo
from ondrop.storage.local import Refused
from ondrop.store.base import QUEUED, REFUSED, Job, NewJob, Store

log = logging.getLogger(__name__)


def job_id(service: str) -> str:
    """`<service>-<uuid4>`, the shape of OSCAR's job names."""
    short = service[:16] if len(service) >= 25 else service
    return f"{short}-{uuid.uuid4()}"


class Intake:
    def __init__(
        self,
        store: Store,
        services: Services,
        providers: Providers,
        router: Router,
        on_jobs: Callable[[list[Job]], None],
    ) -> None:
        self.store = store
        self.services = services
        self.providers = providers
        self.router = router
        self.on_jobs = on_jobs
        # Keys an upload is storing and recording itself: (source, key) -> uploads, and
        # the versions of them another source offered meanwhile that no upload recorded.
        self._uploading: dict[tuple[str, str], int] = {}
        self._passed: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def uploading(self, provider: str, key: str) -> Iterator[None]:
        """An upload stores `key`, then records it (`object_stored(..., uploaded=True)`)
        or, when it cannot, removes it and answers an error. Meanwhile the other sources
        (watcher, listings, webhooks) leave the key to it: one of them could otherwise
        record the version the upload then removes. What they offered meanwhile is
        offered again after, unless it was the version the upload recorded (the bundled
        store's webhook tells of every upload's own write)."""
        held = (self.providers.resolve(provider), key)
        with self._lock:
            self._uploading[held] = self._uploading.get(held, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._uploading.pop(held) - 1
                if left:
                    self._uploading[held] = left
                again = not left and bool(self._passed.pop(held, None))
            if again:
                self._offer_again(*held)

    def _offer_again(self, source: str, key: str) -> None:
        try:
            info = self.providers.get(source).stat(key)
            if info is not None:
                self.object_stored(source, info)
        except Exception:
            log.exception("%s: could not record %r after its upload", source, key)

    def _left_to_upload(self, source: str, infos: Sequence[ObjectInfo]) -> set[str]:
        """The keys of those of `infos` an upload holds (see uploading), their versions
        noted to be offered again."""
        if not self._uploading:
            return set()
        with self._lock:
            held = {info.key for info in infos if (source, info.key) in self._uploading}
            for info in infos:
                if info.key in held:
                    self._passed.setdefault((source, info.key), set()).add(info.version)
        return held

    def _recorded_by_upload(self, source: str, infos: Sequence[ObjectInfo]) -> None:
        """An upload records these versions itself: none of them is offered again."""
        if not self._passed:
            return
        with self._lock:
            for info in infos:
                passed = self._passed.get((source, info.key))
                if passed is not None:
                    passed.discard(info.version)

    def object_stored(
        self,
        provider: str,
        info: ObjectInfo,
        parent_job: str | None = None,
        uploaded: bool = False,
    ) -> list[Job]:
        """A new object version in a provider: start the services whose input takes it.
        Returns the jobs of this version, also when another source recorded it first.
        `uploaded`: called by the upload that holds the key (see uploading)."""
        self.services.catch_up()
        source = self.providers.resolve(provider)
        if not self.services.targets(source, info.key):
            return []
        if not uploaded and self._left_to_upload(source, [info]):
            return []
        jobs = self._new_version(source, info, parent_job)
        if uploaded:  # recorded: none of the upload's own version needs offering again
            self._recorded_by_upload(source, [info])
        return jobs

    def _new_version(self, source: str, info: ObjectInfo, parent_job: str | None) -> list[Job]:
        if self.store.seen(source, info.key, info.version):
            return self.store.event_jobs(source, info.key, info.version)
        planned = self._plan(source, info, parent_job)
        if planned is None:
            return []
        return self._record(*planned) or self.store.event_jobs(source, info.key, info.version)

    def objects_stored(
        self, provider: str, infos: Sequence[ObjectInfo], uploaded: bool = False
    ) -> list[Job]:
        """Many object versions at once (what a watcher saw land, or one upload of many
        files, which holds their keys: `uploaded`): recorded in one transaction, one wait
        for the disk. Returns the jobs created (a Refused entry's refused, never queued)."""
        self.services.catch_up()
        source = self.providers.resolve(provider)
        wanted = [info for info in infos if self.services.targets(source, info.key)]
        if not uploaded:
            held = self._left_to_upload(source, wanted)
            wanted = [info for info in wanted if info.key not in held]
        created = self._new_versions(source, wanted)
        if uploaded:  # recorded: none of the upload's own versions needs offering again
            self._recorded_by_upload(source, wanted)
        return created

    def _new_versions(self, source: str, wanted: list[ObjectInfo]) -> list[Job]:
        if not wanted:
            return []
        # Two reads for the whole batch: which versions are new, and which are outputs.
        new = self.store.unseen(source, [(info.key, info.version) for info in wanted])
        wanted = [info for info in wanted if (info.key, info.version) in new]
        refused = [info for info in wanted if isinstance(info, Refused)]
        wanted = [info for info in wanted if not isinstance(info, Refused)]
        producers = self.store.producers(source, [info.key for info in wanted])
        batch = [
            planned
            for info in wanted
            if (planned := self._plan(source, info, producer=producers.get(info.key))) is not None
        ]
        batch += [self._refusal(source, info) for info in refused]
        if not batch:
            return []
        created = self.store.add_events(batch)
        for job in created:
            if job.status == REFUSED:
                log.warning(
                    "%s: %s of %s is refused: %s", job.service, job.input_key, source, job.reason
                )
        queued = [job for job in created if job.status == QUEUED]
        if queued:
            log.debug("%d event(s) of %s started %d job(s)", len(batch), source, len(queued))
            self.on_jobs(queued)
        return created

    def _refusal(self, source: str, info: Refused) -> tuple[Event, list[NewJob]]:
        """An entry that is never read (a link): a job of each service it would start,
        refused with the reason and never queued, so that its list shows it."""
        event = object_event(source, info.key, info.version, None)
        jobs = self._new_jobs(event, self.services.targets(source, info.key))
        return event, [dataclasses.replace(j, status=REFUSED, reason=info.reason) for j in jobs]

    def _plan(
        self,
        source: str,
        info: ObjectInfo,
        parent_job: str | None = None,
        producer: Job | Literal[False] | None = False,
    ) -> tuple[Event, list[NewJob]] | None:
        """The event of a new object version and the jobs it starts; None when it starts
        none. `producer`: the job that wrote the object, when already looked up."""
        targets = self.services.targets(source, info.key)
        if not targets:
            return None
        if producer is False:
            producer = self.store.job(parent_job) if parent_job else None
            if producer is None:
                producer = self.store.producer(source, info.key)
        if producer is not None:
            # A service's own outputs never start it again.
            targets = [t for t in targets if t != producer.service]
            if not targets:
                return None
        event = object_event(
            source, info.key, info.version, info.size, producer.id if producer else None
        )
        return event, self._new_jobs(event, targets)

    def object_for(self, service: str, provider: str, info: ObjectInfo) -> Job | None:
        """A storage event sent to one service (`/job` with a MinIO/S3 event): that service's
        job for the object version, new or recorded before; other services whose input
        takes the object get theirs too. None when the object is the service's own output
        (a store's webhook on an input folder that holds the outputs too)."""
        self.services.catch_up()
        source = self.providers.resolve(provider)
        others = [t for t in self.services.targets(source, info.key) if t != service]
        producer = self.store.producer(source, info.key)
        if producer is not None:
            if producer.service == service:
                return None
            others = [t for t in others if t != producer.service]
        event = object_event(
            source, info.key, info.version, info.size, producer.id if producer else None
        )
        if others:
            self._record(event, self._new_jobs(event, others))
        job, created = self._ensure(service, event)
        if created:
            self.on_jobs([job])
        return job

    def _ensure(self, service: str, event: Event) -> tuple[Job, bool]:
        """The job of `service` for `event`, recorded now unless it was; and whether it
        was made now."""
        new = NewJob(
            job_id(service), service, self.router.pool_for(self.services.get(service), event)
        )
        return self.store.ensure_job(event, new)

    def reprocess(self, service: str) -> tuple[list[Job], int]:
        """Jobs of `service` for the files already in its input folders that its filters
        take: one per file version that has none yet (as SCAR's `scar run`), whatever
        started or left it alone before. The new jobs, and how many files had one."""
        self.services.catch_up()
        created: list[Job] = []
        had = 0
        for io in self.services.get(service).input:
            source = self.providers.resolve(io.storage_provider)
            infos = [
                info
                for info in self.providers.get(source).list(io.path)
                if service in self.services.targets(source, info.key)
            ]
            producers = self.store.producers(source, [info.key for info in infos])
            for info in infos:
                producer = producers.get(info.key)
                if producer is not None and producer.service == service:
                    continue  # its own output: never its input
                event = object_event(
                    source, info.key, info.version, info.size, producer.id if producer else None
                )
                job, made = self._ensure(service, event)
                if made:
                    created.append(job)
                else:
                    had += 1
        if created:
            self.on_jobs(created)
        return created, had

    def invoke(
        self, service: str, payload: str, size: int, name: str, body: str, priority: int
    ) -> Job:
        """An HTTP invocation of `service`: the body kept as `payload` (see Payloads) becomes
        its input file called `name`."""
        self.services.catch_up()
        event = invoke_event(payload, size, name, body)
        (job,) = self._record(event, self._new_jobs(event, [service], priority))
        return job

    def collect(self, job_id: str) -> list[Job]:
        """A job has ended for good: when it was the last of its original input's family,
        start the services that collect (fan-in) that family, once per input.

        Called after the job's end is recorded: of jobs ending together, the last to be
        recorded sees the whole family ended. A crash in between is made up for by
        collect_settled() on the next start."""
        if not any(s.collect for s in self.services.all()):
            return []
        origin = self.store.origin(job_id)
        if origin is None or origin.id is None or self.store.family_busy(origin.id):
            return []
        return [
            job
            for name, event in self.collections_due(origin, self.store.family(origin.id))
            for job in self._record(event, self._new_jobs(event, [name]))
        ]

    def collections_due(self, origin: Event, family: list[Job]) -> list[tuple[str, Event]]:
        """(collector, event) of the collecting jobs due for the ended `family` of
        `origin` (oldest job first), and not started yet: of each service that collects
        one of its services and was applied before its first job was made (a family that
        `reprocess` started anew is collected too)."""
        if not family:
            return []
        services = {j.service for j in family if j.status != REFUSED}  # those that ran
        return [
            (collector.name, event)
            for collector in self.services.all()
            if collector.collect in services
            and family[0].created_at >= self.services.created(collector.name)
            and (event := self._collection(collector.name, origin)) is not None
        ]

    def collect_settled(self) -> list[Job]:
        """The collecting jobs due for families that ended while nobody was looking (the
        platform stopped between a family's last job and its collection)."""
        created = []
        for collector in self.services.all():
            if collector.collect:
                since = self.services.created(collector.name)
                for origin in self.store.settled_origins(collector.collect, since):
                    created += self._collect(collector.name, origin)
        return created

    def _collect(self, collector: str, origin: Event) -> list[Job]:
        event = self._collection(collector, origin)
        return [] if event is None else self._record(event, self._new_jobs(event, [collector]))

    def _collection(self, collector: str, origin: Event) -> Event | None:
        """The event that runs `collector` for `origin`; None once it was recorded."""
        event = collect_event(collector, origin)
        return None if self.store.seen(event.source, event.key, event.version) else event

    def seen(self, source: str, info: ObjectInfo) -> None:
        """Remember an object of the provider named `source` as already there, so that it
        never starts a job."""
        self.store.add_event(object_event(source, info.key, info.version, info.size), [])

    def _new_jobs(self, event: Event, targets: list[str], priority: int = 0) -> list[NewJob]:
        return [
            NewJob(
                job_id(name), name, self.router.pool_for(self.services.get(name), event), priority
            )
            for name in targets
        ]

    def _record(self, event: Event, jobs: list[NewJob]) -> list[Job]:
        created = self.store.add_event(event, jobs)
        if created:
            log.debug("event %s:%s started %d job(s)", event.source, event.key, len(created))
            self.on_jobs(created)
        return created
