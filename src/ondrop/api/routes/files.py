"""/system/files: upload, download, list and delete objects in any provider (ondrop).

An upload into a service's input path is an event like any other: it is recorded
with its jobs before the reply, which lists them. An upload answered with an error was
not recorded and is not kept: when the store cannot record it after it was stored (a
locked database, a full disk), the object is removed again before the answer, so a
client that sends it again gets it processed once. Only when even that fails does the
answer say it was stored.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Annotated, Any, BinaryIO, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ondrop.api.archive import Member, members
from ondrop.api.body import receive
from ondrop.api.deps import Admin, PlatformDep
from ondrop.api.disposition import attachment
from ondrop.api.openapi import READS, WRITES, errors, header, raw_body, tar_body
from ondrop.errors import (
    DiskFullError,
    InvalidKeyError,
    NotFoundError,
    OndropError,
    StorageError,
    disk_full,
)
from ondrop.platform import Platform
from ondrop.storage.base import ObjectInfo, StorageProvider, check_key, check_prefix
from ondrop.storage.local import LocalStorage
from ondrop.store.base import Job

log = logging.getLogger(__name__)
router = APIRouter(
    dependencies=[Admin],
    tags=["files"],
    responses=errors(400, 401, 404, 502, *READS, why={404: "no such provider or object"}),
)


@router.get("/system/files/{provider}", responses=errors(422, why={422: "`limit` is below 1"}))
def list_files(
    provider: str,
    platform: PlatformDep,
    prefix: str = "",
    limit: Annotated[int | None, Query(ge=1, description="list at most this many")] = None,
) -> dict[str, Any]:
    """Every object under the folder `prefix` in key order, with size, version and
    modification time; with `limit`, the first `limit` of them, and `truncated` says
    whether there were more."""
    store = platform.providers.get(provider)
    listed = store.list(check_prefix(prefix, "prefix"))
    objects = list(listed if limit is None else itertools.islice(listed, limit + 1))
    truncated = limit is not None and len(objects) > limit
    return {
        "provider": store.name,
        "objects": [
            {"key": o.key, "size": o.size, "version": o.version, "modified": o.modified}
            for o in objects[:limit]
        ],
        "truncated": truncated,
    }


@router.get(
    "/system/files/{provider}/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the object's bytes",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "headers": {
                **header("ETag", "the object's version, quoted"),
                **header("Content-Disposition", "attachment, with the object's file name"),
            },
        }
    },
)
def download(provider: str, key: str, platform: PlatformDep) -> StreamingResponse:
    return streamed(platform.providers.get(provider), key)


def streamed(store: StorageProvider, key: str) -> StreamingResponse:
    """The object at `key` as a download."""
    info = store.stat(check_key(key))
    if info is None:
        raise NotFoundError(f"{store.name}: no object {key!r}")
    stream = store.open(key)

    def chunks() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(1 << 20):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(info.size),
            "ETag": f'"{info.version}"',
            "Content-Disposition": attachment(key.rsplit("/", 1)[-1]),
        },
    )


@router.put(
    "/system/files/{provider}/{key:path}",
    status_code=201,
    responses=errors(413, *WRITES),
    openapi_extra=raw_body("the object's bytes, stored as they come", invocation=False),
)
async def upload(
    provider: str, key: str, request: Request, platform: PlatformDep
) -> dict[str, Any]:
    """Store the body at `key`; returns the object and the ids of the jobs it started."""
    return await stored_body(platform, platform.providers.get(provider), key, request)


async def stored_body(
    platform: Platform, store: StorageProvider, key: str, request: Request
) -> dict[str, Any]:
    """Store the request's body at `key`, an event like any other (see the module)."""
    check_key(key)
    # A local store may keep this very file, and gives it its own mode as it does.
    body = await receive(request, platform.settings.max_upload, platform.tmp)

    def store_it() -> tuple[ObjectInfo, list[Job]]:  # one trip to a worker thread
        with platform.intake.uploading(store.name, key):  # no other source records it
            try:
                info = store.put_file(key, body, move=True)  # a local store takes the file
            except StorageError as exc:
                if disk_full(exc):
                    raise provider_full(store, key, exc) from exc
                raise
            finally:
                body.unlink(missing_ok=True)
            try:
                return info, platform.intake.object_stored(store.name, info, uploaded=True)
            except OndropError as exc:
                told = withdraw(store, info)
                answer = copy.copy(exc)  # the same error, saying what became of the upload
                answer.args = (f"{exc}; {told}",)
                raise answer from exc
            except Exception:
                withdraw(store, info)
                raise

    info, jobs = await run_in_threadpool(store_it)
    return {"provider": store.name, **_stored(platform, store, info, jobs)}


def _stored(
    platform: Platform, store: StorageProvider, info: ObjectInfo, jobs: list[Job]
) -> dict[str, Any]:
    """What an upload answers of one object: it, the jobs it started, or why none."""
    answer: dict[str, Any] = {
        "key": info.key,
        "size": info.size,
        "version": info.version,
        "jobs": [{"service": j.service, "job": j.id} for j in jobs],
    }
    if not jobs:
        answer["no_job"] = platform.services.why_no_job(store.name, info.key)
    return answer


@router.post(
    "/system/files/{provider}",
    status_code=201,
    responses=errors(
        400,
        413,
        *WRITES,
        why={
            400: "the body is not a tar archive, or a member is not a regular file, has an "
            "unsafe name or is there twice (nothing was stored)"
        },
    ),
    openapi_extra=tar_body(),
)
async def upload_many(
    provider: str, request: Request, platform: PlatformDep, prefix: str = ""
) -> dict[str, Any]:
    """Store every file of a tar body under the folder `prefix`, and start their jobs,
    recorded together before the answer (ondrop; what `ondrop put` sends for many small
    files): all or none. Answers `{provider, objects: [{key, size, version, jobs:
    [{service, job}], no_job}]}`, `no_job` saying why a file started none."""
    store = platform.providers.get(provider)
    folder = check_prefix(prefix, "prefix")
    body = await receive(request, platform.settings.max_upload, platform.tmp)

    def store_all() -> tuple[list[ObjectInfo], list[Job]]:
        try:
            found = members(body, folder)
            with contextlib.ExitStack() as holding:
                for member in found:  # no other source records them meanwhile
                    holding.enter_context(platform.intake.uploading(store.name, member.key))
                storing = Storing(store)
                try:
                    storing.put_all(body, found)
                    stored = storing.stored
                    return stored, platform.intake.objects_stored(store.name, stored, uploaded=True)
                except BaseException as exc:
                    told = [withdraw(store, info) for info in storing.stored]
                    if isinstance(exc, StorageError) and disk_full(exc) and found:
                        raise provider_full(store, storing.failed or found[-1].key, exc) from exc
                    if isinstance(exc, tarfile.TarError | EOFError):
                        raise InvalidKeyError(
                            f"the archive ends early or is damaged ({exc}); nothing was kept"
                        ) from None
                    if isinstance(exc, OndropError):
                        answer = copy.copy(exc)  # the same error, saying what became of it
                        answer.args = (
                            f"{exc}; "
                            + (
                                "some files WERE stored, but their jobs were not recorded: "
                                "upload them again"
                                if any("WAS stored" in t for t in told)
                                else "nothing was kept: send it again"
                            ),
                        )
                        raise answer from exc
                    raise
        finally:
            body.unlink(missing_ok=True)

    stored, jobs = await run_in_threadpool(store_all)
    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        by_key.setdefault(job.input_key, []).append(job)
    objects = [_stored(platform, store, info, by_key.get(info.key, [])) for info in stored]
    return {"provider": store.name, "objects": objects}


class Storing:
    """The members of an archive stored in `store`, in their order, `store.concurrent` at
    a time: a small one is read whole and put from a thread, a big one streamed from the
    archive. `stored` holds what was stored, also when one failed (`failed`: its key)."""

    SMALL = 1 << 20  # bytes of a member read whole to be put from a thread

    def __init__(self, store: StorageProvider) -> None:
        self.store = store
        self.stored: list[ObjectInfo] = []
        self.failed: str | None = None

    def put_all(self, body: Path, found: Sequence[Member]) -> None:
        done: dict[int, ObjectInfo] = {}
        error: BaseException | None = None
        at_once = max(1, self.store.concurrent)
        with ThreadPoolExecutor(at_once, "ondrop-storing") as pool, tarfile.open(body, "r:") as tar:
            pending: dict[Future[ObjectInfo], int] = {}

            def settle(futures: Iterable[Future[ObjectInfo]]) -> None:
                nonlocal error
                for future in futures:
                    i = pending.pop(future)
                    try:
                        done[i] = future.result()
                    except BaseException as exc:
                        if error is None:
                            error, self.failed = exc, found[i].key

            try:
                for i, member in enumerate(found):
                    if error is not None:
                        break
                    data = tar.extractfile(member.entry)
                    assert data is not None  # a regular file's
                    with data:
                        if at_once > 1 and member.entry.size <= self.SMALL:
                            content = io.BytesIO(data.read())
                            pending[pool.submit(self.store.put, member.key, content)] = i
                        else:
                            try:
                                done[i] = self.store.put(member.key, cast(BinaryIO, data))
                            except BaseException as exc:
                                error, self.failed = exc, member.key
                    settle([f for f in pending if f.done()])  # a failure stops what follows
                    if len(pending) >= 2 * at_once:  # read ahead no more than this
                        settle(wait(pending, return_when=FIRST_COMPLETED).done)
            finally:
                settle(wait(pending).done)
                self.stored = [done[i] for i in sorted(done)]
        if error is not None:
            raise error


def provider_full(store: StorageProvider, key: str, exc: Exception) -> DiskFullError:
    folder = store.root if isinstance(store, LocalStorage) else None
    return DiskFullError(
        f"{store.name} is full: {key!r} could not be stored ({exc}); free space in its "
        "folder, then upload it again",
        folder,
    )


def withdraw(store: StorageProvider, info: ObjectInfo) -> str:
    """Remove an upload that was stored but whose event could not be recorded, so that
    nothing answered with an error is kept or processed; returns what to tell the client
    (when it cannot be removed: that it was stored)."""
    try:
        current = store.stat(info.key)
        if current is not None and current.version == info.version:  # not someone else's
            store.delete(info.key)
    except Exception:
        log.exception("%s: could not remove %r, whose upload failed", store.name, info.key)
        return "the upload WAS stored, but its jobs were not recorded: upload it again"
    return "the upload was not kept: send it again"


@router.delete("/system/files/{provider}/{key:path}", status_code=204)
def delete(provider: str, key: str, platform: PlatformDep) -> Response:
    platform.providers.get(provider).delete(check_key(key))
    return Response(status_code=204)
