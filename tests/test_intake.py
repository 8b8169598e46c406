"""Intake and routing: which services an object starts, chains, and a job's lineage."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ondrop.events.base import object_event
from ondrop.fdl.models import Service
from ondrop.intake import Intake, job_id
from ondrop.pools.router import Router
from ondrop.services import Services
from ondrop.storage import MemoryStorage, Providers
from ondrop.storage.base import ObjectInfo
from ondrop.store.base import Job
from ondrop.store.sqlite import SQLiteStore


@pytest.fixture
def rig(tmp_path: Path) -> tuple[Intake, MemoryStorage, list[Job]]:
    storage = MemoryStorage("memory.default")
    store = SQLiteStore(tmp_path / "s.db")
    providers = Providers({"minio.default": storage, "memory.default": storage})
    services = Services(store, providers, lambda s: (None, None))
    services.apply(
        [
            Service.model_validate(
                {
                    "name": "split",
                    "script": "true",
                    "mode": "batch",
                    "input": [{"path": "video/in"}],
                    "output": [{"path": "video/parts"}],
                }
            ),
            Service.model_validate(
                {
                    "name": "detect",
                    "script": "true",
                    "mode": "hybrid",
                    "input": [{"path": "video/parts"}],
                    "output": [{"path": "video/parts/boxes"}],
                }
            ),
        ]
    )
    woken: list[Job] = []
    return Intake(store, services, providers, Router(), woken.extend), storage, woken


def test_an_object_starts_the_services_whose_input_takes_it(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, woken = rig
    info = storage.put("video/in/clip.mp4", io.BytesIO(b"mp4"))
    (job,) = intake.object_stored("memory.default", info)
    assert (job.service, job.pool, job.input_key) == ("split", "batch", "video/in/clip.mp4")
    assert woken == [job]
    assert intake.object_stored("memory.default", storage.put("elsewhere/x", io.BytesIO(b""))) == []


def test_an_output_starts_the_next_service_with_its_parent_but_never_its_own(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, _ = rig
    (split,) = intake.object_stored(
        "memory.default", storage.put("video/in/clip.mp4", io.BytesIO(b"mp4"))
    )
    part = storage.put("video/parts/p1.mp4", io.BytesIO(b"part"))
    (detect,) = intake.object_stored("memory.default", part, parent_job=split.id)
    assert (detect.service, detect.parent_job, detect.pool) == ("detect", split.id, "faas")
    # detect writes into a folder below its own input: that never starts detect again.
    intake.store.record_output("memory.default", "video/parts/boxes/p1.json", detect.id)
    boxes = storage.put("video/parts/boxes/p1.json", io.BytesIO(b"{}"))
    assert intake.object_stored("memory.default", boxes) == []


def test_a_batch_of_objects_is_recorded_once_each_starting_only_what_it_should(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, woken = rig
    new = [storage.put(f"video/in/{i}.mp4", io.BytesIO(b"mp4")) for i in range(3)]
    (earlier,) = intake.object_stored("memory.default", new[0])  # recorded before the batch
    elsewhere = storage.put("elsewhere/x", io.BytesIO(b""))
    created = intake.objects_stored("memory.default", [*new, elsewhere, new[1]])
    assert sorted(j.input_key for j in created) == ["video/in/1.mp4", "video/in/2.mp4"]
    assert {j.service for j in created} == {"split"}
    assert woken == [earlier, *created]
    assert intake.objects_stored("memory.default", new) == []  # all seen now


def test_a_storage_event_for_one_service_returns_its_job_once(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, _ = rig
    info = storage.put("video/in/clip.mp4", io.BytesIO(b"mp4"))
    first = intake.object_for("detect", "minio.default", info)
    again = intake.object_for("detect", "minio.default", info)
    assert first is not None and again is not None
    assert first.id == again.id and first.service == "detect"
    # The services whose input takes the object got their job too, once.
    jobs = intake.store.event_jobs("memory.default", info.key, info.version)
    assert sorted(j.service for j in jobs) == ["detect", "split"]


def test_seen_objects_start_nothing_later(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, _ = rig
    info = storage.put("video/in/old.mp4", io.BytesIO(b"old"))
    intake.seen("memory.default", info)
    assert intake.object_stored("memory.default", info) == []


def test_job_ids_have_oscars_shape() -> None:
    assert job_id("cowsay").startswith("cowsay-") and len(job_id("cowsay")) == 7 + 36
    assert job_id("a-service-name-longer-than-25").startswith("a-service-name-l-")


def test_the_router_sends_batch_services_to_batch_and_the_rest_to_faas() -> None:
    event = object_event("local.default", "k", "1", 1)
    for mode, pool in [("faas", "faas"), ("hybrid", "faas"), ("batch", "batch")]:
        service = Service.model_validate({"name": "s", "script": "true", "mode": mode})
        assert Router().pool_for(service, event) == pool


def test_a_storage_event_about_a_services_own_output_starts_nothing(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    intake, storage, _ = rig
    (split,) = intake.object_stored(
        "memory.default", storage.put("video/in/clip.mp4", io.BytesIO(b"mp4"))
    )
    intake.store.record_output("memory.default", "video/in/loop.mp4", split.id)
    info = storage.put("video/in/loop.mp4", io.BytesIO(b"own output"))
    assert intake.object_for("split", "memory.default", info) is None


def test_a_version_offered_during_an_upload_is_offered_again_after_unless_it_was_the_uploads(
    rig: tuple[Intake, MemoryStorage, list[Job]],
) -> None:
    """While an upload holds a key, a webhook or listing that offers it is left aside; after
    the upload, a version it did not record (someone else's write) starts its job, and its
    own version (the store telling of the upload's write) is not looked at again."""
    intake, storage, woken = rig
    stats: list[str] = []
    stat = storage.stat

    def counted(key: str) -> ObjectInfo | None:
        stats.append(key)
        return stat(key)

    storage.stat = counted  # type: ignore[method-assign]

    with intake.uploading("memory.default", "video/in/own.mp4"):
        own = storage.put("video/in/own.mp4", io.BytesIO(b"mine"))
        assert intake.object_stored("memory.default", own) == []  # the webhook: left aside
        (job,) = intake.object_stored("memory.default", own, uploaded=True)
    assert stats == [] and [j.id for j in woken] == [job.id]

    with intake.uploading("memory.default", "video/in/raced.mp4"):
        mine = storage.put("video/in/raced.mp4", io.BytesIO(b"mine"))
        intake.object_stored("memory.default", mine, uploaded=True)
        theirs = storage.put("video/in/raced.mp4", io.BytesIO(b"theirs, written meanwhile"))
        assert intake.objects_stored("memory.default", [theirs]) == []  # left aside
    assert stats == ["video/in/raced.mp4"]  # looked at again after the upload
    assert len(woken) == 3  # own.mp4, then both versions of raced.mp4
