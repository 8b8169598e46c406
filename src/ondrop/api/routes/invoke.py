"""/job and /run: invoke a service over HTTP, asynchronously or synchronously (OSCAR).

The body is the job's input: JSON is written as it came, other text is taken as
base64 (OSCAR's convention), and `Content-Type: application/octet-stream` means
raw bytes (ondrop's client). A storage event body starts the job on the object it names;
the other shapes OSCAR's faas-supervisor reads are unwrapped first (events/shapes.py).
`/run` answers with the output: one file as it is, several zipped, none: the
script's output; base64-encoded unless the client accepts application/octet-stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import shutil
import zipfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ondrop.api.auth import is_admin
from ondrop.api.body import data_full, receive
from ondrop.api.deps import PlatformDep, ServiceAccess
from ondrop.api.disposition import attachment, filename
from ondrop.api.openapi import WRITES, errors, header, raw_body
from ondrop.api.routes.logs import PHASES
from ondrop.errors import (
    ExecutionError,
    ForbiddenError,
    InvalidKeyError,
    NotFoundError,
    disk_full,
)
from ondrop.events import shapes
from ondrop.fdl.models import Service
from ondrop.jobs import SYNC_PRIORITY
from ondrop.platform import Platform
from ondrop.storage.base import check_key, join_key, under
from ondrop.storage.onedata import OnedataStorage
from ondrop.store.base import FINISHED, SUCCEEDED, Job
from ondrop.supervisor import output_files, read_regular

router = APIRouter(tags=["invoke"])
BODY = raw_body(
    "the input: JSON as it is, other text as base64, raw bytes with "
    "`Content-Type: application/octet-stream`; a storage event (`/job`: S3, MinIO, dCache, "
    "within API Gateway or delegated events) names stored objects"
)
BODY["parameters"] = [
    {
        "name": "Content-Disposition",
        "in": "header",
        "required": False,
        "description": 'the input file\'s name: `attachment; filename="x.png"` (or '
        "`filename*=UTF-8''<percent-encoded>`); default `event-file`",
        "schema": {"type": "string"},
    }
]
INVOKING = (400, 401, 404, 413, *WRITES)
WHY = {
    401: "neither the service's token nor the admin's credentials",
    404: "no such service (or an object the event names), or the job was deleted",
}


class Started(BaseModel):
    """The job an invocation started (201), or why none was (200)."""

    job_id: str | None = Field(description="the job's id; null when no job was started")
    service: str
    status: str = Field(description="`Pending`, `Running`... or `Skipped` (no job)")
    reason: str | None = Field(default=None, description="why no job was started")


POLL = 5.0  # seconds between looks in the store at a /run job: deleted, or ended elsewhere
SHARED_POLL = 0.05  # the first look on a shared store, growing to POLL (another control
# plane may run the job, and only the store says when it ends)
SMALL_BODY = 1 << 20  # bodies up to this size are read whole (storage events, JSON)
RAW = "application/octet-stream"  # a body that is the input file's bytes, as they are


def _filename(request: Request) -> str:
    name = (filename(request.headers.get("content-disposition", "")) or "").strip() or "event-file"
    if "/" in name:
        raise InvalidKeyError(f"file name {name!r} must not contain '/'")
    return check_key(name, "file name")


def decode_body(path: Path, content_type: str) -> tuple[Path, str]:
    """(the file holding the input, text for $EVENT) from the body received at `path`, read
    as OSCAR reads it. A base64 body is decoded into a sibling file that replaces it."""
    if content_type.startswith("application/octet-stream"):
        return path, ""
    if path.stat().st_size <= SMALL_BODY:
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        try:
            json.loads(raw)
            return path, text
        except ValueError:
            pass
    else:
        text = ""
        with path.open("rb") as f:
            if f.read(64).lstrip()[:1] in (b"{", b"["):
                return path, text  # a large JSON document, taken as it is
    decoded = path.with_name(path.name + ".decoded")
    try:
        _unbase64(path, decoded)
    except (binascii.Error, ValueError):
        decoded.unlink(missing_ok=True)
        return path, text  # ondrop is lenient: a body that is not base64 is taken as it is
    path.unlink()
    return decoded, text


def _unbase64(source: Path, dest: Path) -> None:
    """Decode base64 (line breaks allowed) from `source` into `dest`, a chunk at a time."""
    carry = b""
    with source.open("rb") as f, dest.open("wb") as out:
        while chunk := f.read(1 << 20):
            data = carry + chunk.translate(None, b" \t\r\n")
            cut = len(data) - len(data) % 4
            out.write(base64.b64decode(data[:cut], validate=True))
            carry = data[cut:]
        if carry:
            raise binascii.Error("incomplete base64")


async def _accept(request: Request, platform: Platform, service: str, priority: int) -> Job | None:
    svc = platform.services.get(service)
    body = await receive(request, platform.settings.max_upload, platform.tmp)
    try:
        shape: shapes.Objects | shapes.Body | None = None
        raw = b""
        content_type = request.headers.get("content-type", "")
        if body.stat().st_size <= SMALL_BODY:
            raw = body.read_bytes()
            shape = shapes.read(raw)
        if isinstance(shape, shapes.Objects) and priority < SYNC_PRIORITY:
            return await _on_objects(request, platform, svc, shape)
        text = ""
        if isinstance(shape, shapes.Body):  # unwrapped from its event, which $EVENT holds
            text = raw.decode("utf-8", errors="replace")
            body.write_bytes(shape.data)
            if shape.exact:
                content_type = RAW
        try:
            content, decoded = await run_in_threadpool(decode_body, body, content_type)
            text = text or decoded
        except OSError as exc:
            if not disk_full(exc):
                raise
            raise data_full("the invocation's input", platform.tmp, exc) from exc
        body = content
        name = _filename(request)
        size = content.stat().st_size
        if not text:  # raw bytes: $EVENT describes the invocation instead
            text = json.dumps({"event": "invocation", "file": name, "size": size})
        try:
            kept = await run_in_threadpool(platform.payloads.adopt, content)
        except OSError as exc:
            if not disk_full(exc):
                raise
            raise data_full("the invocation's input", platform.payloads.folder, exc) from exc
        try:
            return await run_in_threadpool(
                platform.intake.invoke, svc.name, kept, size, name, text, priority
            )
        except Exception:
            # Not recorded (a locked database, a full disk): nothing of it is kept either.
            platform.payloads.discard(kept)
            raise
    finally:
        body.unlink(missing_ok=True)


async def _on_objects(
    request: Request, platform: Platform, svc: Service, event: shapes.Objects
) -> Job | None:
    """A storage event: jobs on the stored objects it names (the first one is answered).
    Each object is looked for in the provider the event names (a delegated event's, when it
    is one of this platform's), else in the service's input whose bucket it names, as the
    store that sent the event is the one OSCAR wired to that input; else in minio.default.
    A dCache event names a file in the service's input on webdav.dcache; a OneTrigger event
    a path in the Onedata space of one of the service's inputs."""
    admin = is_admin(request, request.app.state.admin)
    named = event.provider
    if event.space is not None:
        named = await run_in_threadpool(_on_space, platform, svc, event.space)
    if named is not None and not platform.providers.known(named):
        if event.in_input:
            raise InvalidKeyError(
                f"the event names a file of {named}, which is not a storage provider here"
            )
        named = None  # an older OSCAR names its cluster, not a provider: found as usual
    place = platform.providers.resolve(named) if named is not None else None
    jobs = []
    for key in event.keys:
        if event.in_input:
            key = _in_input(platform, svc, place or "", key)
        inputs = [
            io
            for io in svc.input
            if under(key, io.path) and place in (None, _resolved(platform, io.storage_provider))
        ]
        fallback = inputs[0].storage_provider if inputs else "minio.default"
        provider = platform.providers.get(named or fallback)
        if not inputs and not admin:
            # A service's token opens its own inputs, not every object in a store.
            raise ForbiddenError(
                f"{key!r} is not in an input path of {svc.name!r}; this token only starts "
                "jobs on the service's own inputs"
            )
        info = await run_in_threadpool(provider.stat, key)
        if info is None:
            raise NotFoundError(f"the event names {key!r}, which is not in {provider.name}")
        found = await run_in_threadpool(platform.intake.object_for, svc.name, provider.name, info)
        if found is not None:
            jobs.append(found)
    return jobs[0] if jobs else None


def _resolved(platform: Platform, provider: str) -> str | None:
    return platform.providers.resolve(provider) if platform.providers.known(provider) else None


def _on_space(platform: Platform, svc: Service, space: str) -> str:
    """The provider of `svc`'s input that is the Onedata space `space` (a OneTrigger
    event's)."""
    for given in svc.input:
        provider = platform.providers.get(given.storage_provider)
        if isinstance(provider, OnedataStorage) and space in (provider.space, provider.space_name):
            return provider.name
    raise InvalidKeyError(
        f"the event names a file in the Onedata space {space!r}, and {svc.name!r} has no "
        "input on it"
    )


def _in_input(platform: Platform, svc: Service, provider: str, name: str) -> str:
    """The key of the file `name` in `svc`'s input on `provider` (a dCache event's)."""
    for given in svc.input:
        if _resolved(platform, given.storage_provider) == provider:
            return join_key(given.path, name)
    raise InvalidKeyError(
        f"the event names the file {name!r} of {provider}, and {svc.name!r} has no input there"
    )


@router.post(
    "/job/{service}",
    status_code=201,
    dependencies=[ServiceAccess],
    response_model=Started,
    responses={
        200: {"model": Started, "description": "no job: the object is the service's own output"},
        201: {"headers": header("Location", "the job's logs: /system/logs/{service}/{job}")},
        **errors(
            403,
            502,
            *INVOKING,
            why={**WHY, 403: "the event names an object outside this token's service's inputs"},
        ),
    },
    openapi_extra=BODY,
)
async def job(service: str, request: Request, platform: PlatformDep) -> JSONResponse:
    """Start a job and return at once (201) with its id."""
    found = await _accept(request, platform, service, priority=0)
    if found is None:
        return JSONResponse(
            {
                "job_id": None,
                "service": service,
                "status": "Skipped",
                "reason": "the object is this service's own output",
            }
        )
    return JSONResponse(
        {"job_id": found.id, "service": service, "status": PHASES.get(found.status, "Pending")},
        status_code=201,
        headers={"Location": f"/system/logs/{service}/{found.id}"},
    )


@router.post(
    "/run/{service}",
    dependencies=[ServiceAccess],
    response_class=Response,
    responses={
        200: {
            "description": "the job's output: one file, a zip of several, or the script's "
            "output when there are none; base64 text unless the request accepts "
            "application/octet-stream",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {
                **header("X-Job-Id", "the job's id"),
                **header("X-Ondrop-Output", "`file`, `zip` or `log`"),
                **header("Content-Disposition", "the file's name", required=False),
            },
        },
        **errors(*INVOKING, why={**WHY, 500: "the job failed (the message says why), or a bug"}),
    },
    openapi_extra=BODY,
)
async def run(service: str, request: Request, platform: PlatformDep) -> Response:
    """Run a job and answer with its output once it has ended."""
    found = await _accept(request, platform, service, priority=SYNC_PRIORITY)
    assert found is not None  # /run bodies are always invocations
    future = platform.watch(found.id)
    results = platform.supervisor.folders.results / found.id
    try:
        ended = await _ended(platform, future, found.id)
    except asyncio.CancelledError:  # the client went away; the job goes on
        future.add_done_callback(lambda _: shutil.rmtree(results, ignore_errors=True))
        raise
    try:
        if ended.status != SUCCEEDED:
            raise ExecutionError(f"job {ended.id} {ended.status}: {ended.reason}")
        return _reply(results, ended, request.headers.get("accept", ""))
    finally:
        shutil.rmtree(results, ignore_errors=True)


async def _ended(platform: Platform, future: Future[Job], job_id: str) -> Job:
    """The job once it has ended, here (the future) or on another control plane on the
    store; also notices a job deleted behind the pool's back."""
    waiting = asyncio.wrap_future(future)
    poll = SHARED_POLL if platform.store.shared else POLL
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), poll)
        except TimeoutError:
            job = await run_in_threadpool(platform.store.job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} was deleted") from None
            if job.status in FINISHED:
                platform.waiters.resolve(job)  # its future too: nobody else will
                return job
            poll = min(POLL, poll * 1.5)


def _reply(results: Path, job: Job, accept: str) -> Response:
    outputs = output_files(results / "output")
    headers = {"X-Job-Id": job.id}
    if not outputs:
        text = (results / "log").read_text() if (results / "log").exists() else ""
        headers["X-Ondrop-Output"] = "log"
        return Response(text, media_type="text/plain; charset=utf-8", headers=headers)
    if len(outputs) == 1:
        data = read_regular(outputs[0])
        headers["X-Ondrop-Output"] = "file"
        headers["Content-Disposition"] = attachment(outputs[0].name)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in outputs:
                archive.writestr(
                    path.relative_to(results / "output").as_posix(), read_regular(path)
                )
        data = buffer.getvalue()
        headers["X-Ondrop-Output"] = "zip"
        headers["Content-Disposition"] = attachment("outputs.zip")
    if "application/octet-stream" in accept:
        return Response(data, media_type="application/octet-stream", headers=headers)
    return Response(base64.b64encode(data), media_type="text/plain", headers=headers)


__all__: list[Any] = ["decode_body", "router"]
