"""The applied services: kept in the store, mirrored in memory, checked as a whole on apply.

Apply refuses what cannot work (unknown providers, loops between services) and
changes nothing then; it warns about what will work differently than asked.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ondrop.errors import (
    ConflictError,
    DefinitionError,
    LoopError,
    NotFoundError,
    OndropError,
    UnavailableError,
)
from ondrop.fdl.models import Service, StorageIO
from ondrop.storage import Providers, StorageProvider, canonical
from ondrop.storage.base import under
from ondrop.store.base import Store, StoredService

# Says whether a service can run here: (error or None, warning or None).
RunCheck = Callable[[Service], tuple[str | None, str | None]]
# Given the (provider, folder) the applied services take input from, once they exist: how
# many files each already held (by provider name and folder), left alone.
BeforeSave = Callable[[list[tuple[StorageProvider, str]]], Mapping[tuple[str, str], int]]
# Who applies: a service as they may apply it, given the one of its name (None when new)
# and every service, checked while the services cannot change (access.py's `owned`).
Ownership = Callable[["Service", "Service | None", Mapping[str, "Service"]], "Service"]
SOURCE_META = "applied-from:"  # + a service's name: the FDL file it was last applied from
CHANGE_LEASE = "services"  # held in the store by the control plane changing the services
CHANGE_LEASE_LENGTH = 120.0  # seconds: far longer than an apply takes
CHANGE_WAIT = 30.0  # seconds an apply waits for another control plane's to end


@dataclass
class Applied:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # those with a field changed
    unchanged: list[str] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)  # updated: the fields changed
    # Files that were in a service's new input folders: seen, and left alone (no job).
    left_alone: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def new_token() -> str:
    return secrets.token_hex(32)  # 64 hex characters, as OSCAR's service tokens


class Services:
    def __init__(self, store: Store, providers: Providers, run_check: RunCheck) -> None:
        self.store = store
        self.providers = providers
        self.run_check = run_check
        self._lock = threading.RLock()
        self._services: dict[str, Service] = {}
        self._generation: int | None = None  # the store's, when they were last read
        self.refresh()

    def refresh(self) -> bool:
        """Read the services again if the store says they changed since they were last
        read (another control plane on the store applied or deleted one); True if so."""
        generation = self.store.generation()
        if generation == self._generation:
            return False
        with self._lock:
            found: dict[str, Service] = {}
            for stored in self.store.services():
                service = Service.model_validate(
                    {**stored.definition, "token": stored.token}, context={"stored": True}
                )
                found[service.name] = service
                for name, config in _declared(service).items():  # the same ones: kept
                    self.providers.register(name, self.providers.candidate(name, config), config)
            self._services = found
            self._generation = generation
        return True

    def catch_up(self) -> None:
        """Where it matters at once (a new object, a request naming a service): read the
        services again if another control plane may have changed them, as it may on a
        store they share."""
        if self.store.shared:
            self.refresh()

    def get(self, name: str) -> Service:
        service = self._services.get(name)
        if service is None:
            raise NotFoundError(f"no service named {name!r}")
        return service

    def find(self, name: str) -> Service | None:
        return self._services.get(name)

    def created(self, name: str) -> float:
        """When the service was first applied (seconds since the epoch); now if it is new."""
        return self._created(name, time.time())

    def all(self) -> list[Service]:
        return sorted(self._services.values(), key=lambda s: s.name)

    def apply(
        self,
        services: Sequence[Service],
        mode: str = "apply",
        before_save: BeforeSave | None = None,
        source: str = "",
        ownership: Ownership | None = None,
    ) -> Applied:
        """Create or update `services` together. `mode` is "create" (all must be new),
        "update" (all must exist) or "apply" (either). `before_save` gets every
        (provider, folder) they take input from, once the folders exist. `source`: the
        FDL file they come from, as the client names it; a service last applied from
        another one is warned about. `ownership` says, with the services as they are, whether
        whoever applies may, and gives each its owner."""
        result = Applied()
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise DefinitionError("the same service name is given twice")
        services = _sharing_declarations(services)
        for service in services:  # what each one needs alone (it may pull an image)
            self._check_providers(service)
            error, warning = self.run_check(service)
            if error:
                raise DefinitionError(f"service {service.name!r}: {error}")
            if warning:
                result.warnings.append(f"service {service.name!r}: {warning}")
        with self._changing():  # the services as they are now, on every control plane
            prepared: list[Service] = []
            for service in services:
                old = self._services.get(service.name)
                if mode == "create" and old is not None:
                    raise ConflictError(
                        f"service {service.name!r} already exists; update it with PUT or apply"
                    )
                if mode == "update" and old is None:
                    raise NotFoundError(f"no service named {service.name!r}")
                if ownership is not None:
                    service = ownership(service, old, self._services)
                prepared.append(self._carry_over(service, old))
            after = {**self._services, **{s.name: s for s in prepared}}
            self._check_loops(after)
            for service in prepared:
                if service.collect is not None and service.collect not in after:
                    raise DefinitionError(
                        f"service {service.name!r}: collect names {service.collect!r}, which "
                        "is not a service; apply it first or in the same definition"
                    )
            staged = self._stage_providers(prepared, after)
            for service in prepared:
                self._make_folders(service, staged)
            held: Mapping[tuple[str, str], int] = {}
            if before_save is not None:
                held = before_save(
                    [
                        (self._provider(io.storage_provider, staged), io.path)
                        for service in prepared
                        for io in service.input
                    ]
                )
            now = time.time()
            self.store.save_services(
                [
                    StoredService(
                        s.name,
                        s.model_dump(exclude={"token"}),
                        s.token,
                        self._created(s.name, now),
                        now,
                    )
                    for s in prepared
                ]
            )
            for service in prepared:
                self._report(service, staged, held, source, result)
            for name, (provider, config) in staged.items():
                self.providers.register(name, provider, config)
            self.refresh()
            return result

    def _report(
        self,
        service: Service,
        staged: dict[str, tuple[StorageProvider, dict[str, Any]]],
        held: Mapping[tuple[str, str], int],
        source: str,
        result: Applied,
    ) -> None:
        """Say what applying `service` did: created, updated (which fields) or unchanged;
        the files its input folders already held; where it was applied from before."""
        name = service.name
        old = self._services.get(name)
        if old is None:
            result.created.append(name)
        else:
            before, after = old.model_dump(), service.model_dump()
            changed = [f for f in after if after[f] != before.get(f)]
            if changed:
                result.updated.append(name)
                result.changes[name] = changed
            else:
                result.unchanged.append(name)
        files = sum(
            held.get((self._provider(io.storage_provider, staged).name, io.path), 0)
            for io in service.input
        )
        if files:
            result.left_alone[name] = files
        if not source:
            return
        earlier = self.store.get_meta(SOURCE_META + name)
        if name in result.changes and earlier and earlier != source:
            result.warnings.append(
                f"service {name!r} came from {earlier}; {source} now replaces it, so a "
                f"chain of {earlier} may have lost this stage (apply {earlier} again to "
                "restore it)"
            )
        if earlier != source:
            self.store.set_meta(SOURCE_META + name, source)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Change the services alone: one change at a time in this process and on the
        store (a lease, so that two control planes cannot together create a loop that each
        one's check alone would refuse), from the services as the store has them now."""
        holder = secrets.token_hex(8)
        with self._lock:
            delay = 0.01
            deadline = time.monotonic() + CHANGE_WAIT
            while not self.store.lease(
                CHANGE_LEASE, holder, time.time() + CHANGE_LEASE_LENGTH, time.time()
            ):
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        "another control plane has been changing the services for "
                        f"{CHANGE_WAIT:g} s; try again in a while"
                    )
                time.sleep(delay)
                delay = min(0.5, delay * 2)
            try:
                self.refresh()
                yield
            finally:
                self.store.release(CHANGE_LEASE, holder)

    def delete(self, name: str) -> None:
        with self._changing():
            if name not in self._services:
                raise NotFoundError(f"no service named {name!r}")
            self.store.delete_service(name)
            self.refresh()

    def targets(self, source: str, key: str) -> list[str]:
        """Services whose input takes the object `key` stored in provider `source`."""
        name = key.rsplit("/", 1)[-1]
        return [
            s.name for s in self.all() if any(self._takes(io, source, key, name) for io in s.input)
        ]

    def why_no_job(self, source: str, key: str) -> str:
        """Why the object `key` of provider `source`, just stored, started no job: which
        input filters kept it out, or that no input takes that folder, or else that it is
        its own service's output or a version recorded before."""
        name = key.rsplit("/", 1)[-1]
        covering = [
            (s.name, io) for s in self.all() for io in s.input if self._covers(io, source, key)
        ]
        if not covering:
            return "no service takes input from that folder"
        filtered = [f"{n} {why}" for n, io in covering if (why := io.refusal(name))]
        if len(filtered) == len(covering):
            return "; ".join(filtered)
        return (
            "it is an output of the service that would take it (which never starts it "
            "again), or that version of it was recorded before"
        )

    def _covers(self, io: StorageIO, source: str, key: str) -> bool:
        try:
            return self.providers.resolve(io.storage_provider) == source and under(key, io.path)
        except NotFoundError:
            return False

    def input_folders(self) -> list[tuple[str, str]]:
        """(provider name, folder) of every service input, for watchers and rescans."""
        seen: dict[tuple[str, str], None] = {}
        for s in self.all():
            for io in s.input:
                seen[(self.providers.resolve(io.storage_provider), io.path)] = None
        return list(seen)

    def _takes(self, io: StorageIO, source: str, key: str, name: str) -> bool:
        return self._covers(io, source, key) and io.accepts(name)

    def _check_providers(self, service: Service) -> None:
        for name in sorted(service.provider_names()):
            try:
                self.providers.check(name, service.storage_providers)
            except DefinitionError as exc:
                raise DefinitionError(f"service {service.name!r}: {exc}") from None

    def _stage_providers(
        self, prepared: list[Service], after: dict[str, Service]
    ) -> dict[str, tuple[StorageProvider, dict[str, Any]]]:
        """The providers these services declare, built but not registered yet (so a wrong
        key can be fixed by applying again); one name, one set of settings."""
        staged: dict[str, tuple[StorageProvider, dict[str, Any]]] = {}
        for service in prepared:
            for name, config in _declared(service).items():
                for other in after.values():
                    theirs = _declared(other).get(name)
                    if theirs is not None and theirs != config:
                        raise DefinitionError(
                            f"service {service.name!r}: storage provider {name!r} is declared "
                            f"with other settings by service {other.name!r}; give them the "
                            "same settings, or use another id"
                        )
                if name not in staged:
                    staged[name] = (self.providers.candidate(name, config), config)
        return staged

    def _provider(
        self, name: str, staged: dict[str, tuple[StorageProvider, dict[str, Any]]]
    ) -> StorageProvider:
        name = canonical(name)
        return staged[name][0] if name in staged else self.providers.get(name)

    def _make_folders(
        self, service: Service, staged: dict[str, tuple[StorageProvider, dict[str, Any]]]
    ) -> None:
        """Create the service's folders (buckets on object stores), as OSCAR does; a store
        that refuses says why here, before anything is saved."""
        for io in [*service.input, *service.output]:
            provider = self._provider(io.storage_provider, staged)
            try:
                provider.ensure_folder(io.path)
            except OndropError as exc:
                raise type(exc)(f"service {service.name!r}: {exc}") from None

    def _carry_over(self, service: Service, old: Service | None) -> Service:
        """Keep the token of an existing service, and secrets sent back blank."""
        if old is None:
            return service.model_copy(update={"token": new_token()})
        secrets_ = {
            k: (v or old.environment.secrets.get(k, ""))
            for k, v in service.environment.secrets.items()
        }
        environment = service.environment.model_copy(update={"secrets": secrets_})
        return service.model_copy(update={"token": old.token, "environment": environment})

    def _created(self, name: str, now: float) -> float:
        stored = self.store.service(name)
        return stored.created_at if stored else now

    def upstream(self, name: str) -> list[str]:
        """The services whose work can lead to jobs of `name`: those whose outputs land in
        its input (or in the input of one that does...), and the services it collects."""
        services = {s.name: s for s in self.all()}
        edges = self._edges(services)
        feeders: dict[str, set[str]] = {n: set() for n in services}
        for source, targets in edges.items():
            for target in targets:
                feeders[target].add(source)
        for s in services.values():
            if s.collect in services:
                feeders[s.name].add(s.collect)
        found: set[str] = set()
        todo = [name]
        while todo:
            for feeder in feeders.get(todo.pop(), ()):
                if feeder not in found and feeder != name:
                    found.add(feeder)
                    todo.append(feeder)
        return sorted(found)

    def _edges(self, services: dict[str, Service]) -> dict[str, list[str]]:
        """Which services each one's outputs start (its output folder is their input)."""

        def places(ios: list[StorageIO]) -> list[tuple[str, str]]:
            found = []
            for io in ios:
                try:
                    found.append((self.providers.resolve(io.storage_provider), io.path))
                except NotFoundError:
                    found.append((canonical(io.storage_provider), io.path))
            return found

        def overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
            return a[0] == b[0] and (a[1] == b[1] or under(a[1], b[1]) or under(b[1], a[1]))

        edges: dict[str, list[str]] = {}
        for a in services.values():
            outs = places(a.output)
            edges[a.name] = sorted(
                b.name
                for b in services.values()
                if b.name != a.name and any(overlap(o, i) for o in outs for i in places(b.input))
            )
        return edges

    def _check_loops(self, services: dict[str, Service]) -> None:
        edges = self._edges(services)
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        path: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            path.append(name)
            for nxt in edges[name]:
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise LoopError(
                        "services would trigger each other in a loop: "
                        + " -> ".join(cycle)
                        + " (each one's output folder is the next one's input); "
                        "give one of them another output path"
                    )
                if state.get(nxt) is None:
                    visit(nxt)
            path.pop()
            state[name] = 2

        for name in sorted(edges):
            if name not in state:
                visit(name)


def _sharing_declarations(services: Sequence[Service]) -> list[Service]:
    """`services`, each also given the providers it uses that another of them declares: a
    provider declared in one definition is everyone's there, as OSCAR's FDL files have
    them (conflicting settings are refused when staged)."""
    declared: dict[str, dict[str, dict[str, Any]]] = {}
    for service in services:
        for kind, entries in service.storage_providers.items():
            for ident, config in entries.items():
                declared.setdefault(kind, {}).setdefault(ident, config)
    shared = []
    for service in services:
        own = {kind: dict(entries) for kind, entries in service.storage_providers.items()}
        for name in service.provider_names():
            kind, _, ident = canonical(name).partition(".")
            theirs = declared.get(kind, {}).get(ident)
            if theirs is not None and ident not in own.get(kind, {}):
                own.setdefault(kind, {})[ident] = theirs
        changed = own != service.storage_providers
        shared.append(service.model_copy(update={"storage_providers": own}) if changed else service)
    return shared


def _declared(service: Service) -> dict[str, dict[str, Any]]:
    """The providers `service` declares and uses, by canonical name."""
    found = {}
    for name in service.provider_names():
        kind, _, ident = canonical(name).partition(".")
        config = service.storage_providers.get(kind, {}).get(ident)
        if config is not None:
            found[f"{kind}.{ident}"] = dict(config)
    return found
