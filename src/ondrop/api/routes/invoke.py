"""/job and /run: invoke a service over HTTP, asynchronously or synchronously (OSCAR).

The body is the job's input: JSON is written as it came, other text is taken as
base64 (OSCAR's convention), and `Content-Type: application/octet-stream` means
raw bytes (ondrop's client). A MinIO/S3 event body starts the job on that object.
`/run` answers with the output: one file as it is, several zipped, none: the
script's output; base64-encoded unless the client accepts application/octet-stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ondrop.api.body import receive
from ondrop.api.deps import PlatformDep, ServiceAccess
from ondrop.errors import ExecutionError, InvalidKeyError, NotFoundError
from ondrop.platform import Platform
from ondrop.storage.base import check_key
from ondrop.store.base import SUCCEEDED, Job
from ondrop.supervisor import SYNC_PRIORITY

router = APIRouter(tags=["invoke"])

_FILENAME = re.compile(r'filename="?([^";]+)"?')


def _filename(request: Request) -> str:
    match = _FILENAME.search(request.headers.get("content-disposition", ""))
    name = match.group(1).strip() if match else "event-file"
    if "/" in name:
        raise InvalidKeyError(f"file name {name!r} must not contain '/'")
    return check_key(name, "file name")


def decode_payload(raw: bytes, content_type: str) -> tuple[bytes, str]:
    """(input file content, text for $EVENT) from a request body, as OSCAR reads it."""
    if content_type.startswith("application/octet-stream"):
        return raw, ""
    text = raw.decode("utf-8", errors="replace")
    try:
        json.loads(raw)
        return raw, text
    except ValueError:
        pass
    try:
        return base64.b64decode(raw, validate=True), text
    except (binascii.Error, ValueError):
        return raw, text  # ondrop is lenient: plain text is taken as it is


def storage_records(raw: bytes) -> list[str] | None:
    """The object keys (`bucket/key`) of a MinIO/S3 event body, or None for other bodies."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return None
    keys = []
    for record in event["Records"]:
        s3 = record.get("s3", {}) if isinstance(record, dict) else {}
        bucket = s3.get("bucket", {}).get("name", "")
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        keys.append(check_key(f"{bucket}/{key}" if bucket else key, "event object key"))
    return keys


async def _accept(request: Request, platform: Platform, service: str, priority: int) -> Job:
    svc = platform.services.get(service)
    body = await receive(request, platform.settings.max_upload, platform.tmp)
    try:
        raw = body.read_bytes()
    finally:
        body.unlink(missing_ok=True)
    keys = storage_records(raw)
    if keys is not None and priority < SYNC_PRIORITY:
        jobs = []
        store = platform.providers.get("minio.default")
        for key in keys:
            info = await run_in_threadpool(store.stat, key)
            if info is None:
                raise NotFoundError(f"the event names {key!r}, which is not in {store.name}")
            found = await run_in_threadpool(platform.intake.object_for, svc.name, store.name, info)
            jobs.append(found)
        if not jobs:
            raise InvalidKeyError("the storage event has no records")
        return jobs[0]
    payload, text = decode_payload(raw, request.headers.get("content-type", ""))
    return await run_in_threadpool(
        platform.intake.invoke, svc.name, payload, _filename(request), text, priority
    )


@router.post("/job/{service}", status_code=201, dependencies=[ServiceAccess])
async def job(service: str, request: Request, platform: PlatformDep) -> JSONResponse:
    """Start a job and return at once (201) with its id."""
    found = await _accept(request, platform, service, priority=0)
    return JSONResponse(
        {"job_id": found.id, "service": service, "status": "Pending"},
        status_code=201,
        headers={"Location": f"/system/logs/{service}/{found.id}"},
    )


@router.post("/run/{service}", dependencies=[ServiceAccess])
async def run(service: str, request: Request, platform: PlatformDep) -> Response:
    """Run a job and answer with its output once it has ended."""
    found = await _accept(request, platform, service, priority=SYNC_PRIORITY)
    future = platform.pool.watch(found.id)
    results = platform.supervisor.folders.results / found.id
    try:
        ended: Job = await asyncio.wrap_future(future)
    except asyncio.CancelledError:  # the client went away; the job goes on
        future.add_done_callback(lambda _: shutil.rmtree(results, ignore_errors=True))
        raise
    try:
        if ended.status != SUCCEEDED:
            raise ExecutionError(f"job {ended.id} {ended.status}: {ended.reason}")
        return _reply(results, ended, request.headers.get("accept", ""))
    finally:
        shutil.rmtree(results, ignore_errors=True)


def _reply(results: Path, job: Job, accept: str) -> Response:
    outputs = sorted(p for p in (results / "output").rglob("*") if p.is_file())
    headers = {"X-Job-Id": job.id}
    if not outputs:
        text = (results / "log").read_text() if (results / "log").exists() else ""
        headers["X-Ondrop-Output"] = "log"
        return Response(text, media_type="text/plain; charset=utf-8", headers=headers)
    if len(outputs) == 1:
        data = outputs[0].read_bytes()
        headers["X-Ondrop-Output"] = "file"
        headers["Content-Disposition"] = f'attachment; filename="{outputs[0].name}"'
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in outputs:
                archive.write(path, path.relative_to(results / "output").as_posix())
        data = buffer.getvalue()
        headers["X-Ondrop-Output"] = "zip"
        headers["Content-Disposition"] = 'attachment; filename="outputs.zip"'
    if "application/octet-stream" in accept:
        return Response(data, media_type="application/octet-stream", headers=headers)
    return Response(base64.b64encode(data), media_type="text/plain", headers=headers)


__all__: list[Any] = ["decode_payload", "router", "storage_records"]
