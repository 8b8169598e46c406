"""/system/logs: a service's jobs (OSCAR's list shape) and each job's logs; one job's
detail, retry and cancel; /system/chains: where the work some jobs belong to stands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Generator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from ondrop.api.deps import Admin, PlatformDep, ServiceChanger, ServiceReader
from ondrop.api.executions import Executions
from ondrop.api.openapi import READS, WRITES, errors
from ondrop.chains import follow
from ondrop.errors import ConflictError, DefinitionError, NotFoundError
from ondrop.platform import Platform
from ondrop.store.base import (
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    REFUSED,
    RUNNING,
    SUCCEEDED,
    Attempt,
    Job,
)

router = APIRouter(
    tags=["jobs"],
    responses=errors(401, 403, 404, *READS, why={404: "no such service, or no such job of it"}),
)
CHANGES = errors(*WRITES)  # the router's, and a full disk

# OSCAR reports the Kubernetes pod phase.
PHASES = {
    QUEUED: "Pending",
    RUNNING: "Running",
    SUCCEEDED: "Succeeded",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
    REFUSED: "Refused",  # never run: a link in an input folder (the reason says so)
}
# A status asked for, by its name here or in the store, in any case.
STATUS_NAMES = {
    **{name.lower(): stored for stored, name in PHASES.items()},
    **{stored: stored for stored in PHASES},
}
PAGE = 70  # OSCAR's default page size
MAX_PAGE = 1_000_000  # a bound, so no number reaches the store out of its range; 0 is all
FOLLOWED_MAX = 100_000  # job ids one /system/chains may name


def _status(asked: str | None) -> str | None:
    """The store's status for `asked` (`Failed`, `failed`...); None for every job."""
    if not asked:
        return None
    found = STATUS_NAMES.get(asked.strip().lower())
    if found is None:
        raise DefinitionError(
            f"status {asked!r} is not a job status: use one of {', '.join(PHASES.values())}"
        )
    return found


def rfc3339(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_json(job: Job) -> dict[str, Any]:
    """OSCAR's fields (null ones left out), then ondrop's."""
    data: dict[str, Any] = {"status": PHASES.get(job.status, job.status)}
    for key, ts in (
        ("creation_time", job.created_at),
        ("start_time", job.started_at),
        ("finish_time", job.finished_at),
    ):
        if ts is not None:
            data[key] = rfc3339(ts)
    duration = None
    if job.started_at is not None and job.finished_at is not None:
        duration = round(job.finished_at - job.started_at, 6)
    data.update(
        attempts=job.attempts,
        exit_code=job.exit_code,
        reason=job.reason,
        input=job.input_key,
        duration=duration,
        pool=job.pool,
        parent_job=job.parent_job,
        created=job.created_at,
        node=job.node,  # where its latest attempt ran, as its backend names it; "" until known
    )
    return data


def _job(platform: Platform, service: str, job_id: str) -> Job:
    platform.services.get(service)
    job = platform.store.job(job_id)
    if job is None or job.service != service:
        raise NotFoundError(f"service {service!r} has no job {job_id!r}")
    return job


@router.get("/system/logs", dependencies=[Admin])
def system_logs(request: Request) -> dict[str, Any]:
    """OSCAR's execution log: `{"logs": [{timestamp, status, latency, client_ip, method,
    path, user, raw}]}`, one entry per invocation (`POST` to /job or /run) this control
    plane answered, oldest first; the last 10,000 since it started (`ondrop up`'s own
    log has everything). `user` is `admin`, `service token` or `oidc user`: who was let in is the
    status's to say."""
    executions: Executions = request.app.state.executions
    return {"logs": executions.all()}


@router.get(
    "/system/logs/{service}",
    dependencies=[ServiceReader],
    responses=errors(
        422,
        why={
            422: "`limit` is not a whole number from 0 to 1,000,000, or `status` is not a "
            "job status"
        },
    ),
)
def list_jobs(
    service: str,
    platform: PlatformDep,
    page: str = "",
    limit: Annotated[
        int,
        Query(ge=0, le=MAX_PAGE, description=f"jobs per page, default {PAGE}; 0 for every job"),
    ] = PAGE,
    status: str | None = None,
) -> dict[str, Any]:
    """`{"jobs": {name: {status, creation_time, start_time, finish_time, ...}}, "next_page",
    "remaining_jobs"}`, newest first, and ondrop's `counts`: the service's jobs by status.
    `limit=0` returns every job; `page` is the
    `next_page` of the previous answer; `status` (Pending, Running, Succeeded, Failed,
    Cancelled or Refused, in any case) keeps only the jobs in it."""
    platform.services.get(service)
    offset = int(page) if page.isdigit() and len(page) < 16 else 0
    wanted = _status(status)
    jobs = platform.store.jobs(service, offset, limit or None, wanted)
    counts = platform.store.count_jobs(service)
    total = sum(n for s, n in counts.items() if wanted in (None, s))
    answer: dict[str, Any] = {
        "jobs": {job.id: job_json(job) for job in jobs},
        "counts": {PHASES.get(s, s): n for s, n in sorted(counts.items()) if n},
    }
    remaining = total - offset - len(jobs)
    if limit and remaining > 0:
        answer["next_page"] = str(offset + len(jobs))
        answer["remaining_jobs"] = remaining
    return answer


@router.delete(
    "/system/logs/{service}",
    dependencies=[ServiceChanger],
    status_code=204,
    responses={**CHANGES, **errors(422, why={422: "`all` is not a boolean"})},
)
def delete_jobs(service: str, platform: PlatformDep, all: bool = False) -> Response:
    """Remove the service's succeeded jobs; with `all=true` every finished one too."""
    platform.services.get(service)
    platform.store.delete_jobs(service, FINISHED if all else (SUCCEEDED,))
    return Response(status_code=204)


@router.get(
    "/system/logs/{service}/{job}",
    dependencies=[ServiceReader],
    response_class=PlainTextResponse,
    responses=errors(422, why={422: "`follow` or `timestamps` is not a boolean"}),
)
def job_logs(
    service: str,
    job: str,
    platform: PlatformDep,
    follow: bool = False,
    timestamps: bool = False,
) -> Response:
    """The script's output (stdout and stderr together), attempt by attempt; a running
    attempt's so far, where this control plane can read it (its own machine's jobs).
    `follow=true` streams it until the job has ended for good (retries included), as it
    is printed; `timestamps=true` heads each attempt with its times and starts each line
    read as it was printed with the time it was read (RFC 3339, UTC)."""
    found = _job(platform, service, job)
    if follow:
        return StreamingResponse(
            _streamed(platform, found.id, timestamps), media_type="text/plain; charset=utf-8"
        )
    attempts = platform.store.attempts(found.id)
    parts = []
    for a in attempts:
        text = a.log
        if a.finished_at is None and (live := platform.live_log(found.id, a.number)):
            with live:
                text = live.read() + live.rest()
        parts.append(_heading(a, timestamps) + text if len(attempts) > 1 or timestamps else text)
    return PlainTextResponse("\n".join(parts))


FOLLOW_PAUSE = 0.2  # seconds between two looks at a followed job's output and status
HEADING = "--- attempt "  # how the line above an attempt's output starts
STOPPING = "\n[the platform is stopping: the job ends or runs again on its next start]\n"


def _heading(a: Attempt, timestamps: bool) -> str:
    """The line above an attempt's output: its number, how it ended, and (with
    `timestamps`) its times."""
    ended = "" if a.finished_at is None else f": {a.reason or a.status}"
    if not timestamps:
        return f"{HEADING}{a.number}{ended} ---\n"
    times = f"started {_stamp(a.started_at)}"
    if a.finished_at is not None:
        times += f", ended {_stamp(a.finished_at)}"
    return f"{HEADING}{a.number} ({times}){ended} ---\n"


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _streamed(platform: Platform, job_id: str, timestamps: bool) -> AsyncIterator[str]:
    """_following, step by step on a worker thread, the pauses between looks on the event
    loop: a follower that waits holds no thread, and one that hangs up is let go at once."""
    steps = _following(platform, job_id, timestamps)
    try:
        while (text := await run_in_threadpool(next, steps, None)) is not None:
            if text:
                yield text
            else:
                await asyncio.sleep(FOLLOW_PAUSE)
    finally:
        with contextlib.suppress(ValueError):  # a step still under way: it ends by itself
            steps.close()


def _following(platform: Platform, job_id: str, timestamps: bool) -> Generator[str, None, None]:
    """The job's output, attempt by attempt, as it comes, until the job has ended for good
    (or is removed); "" where it is time to pause before looking again. A heading starts
    on a line of its own."""
    last = "\n"
    for text in _attempts_followed(platform, job_id, timestamps):
        if not text:
            yield ""
            continue
        if text.startswith(HEADING) and not last.endswith("\n"):
            yield "\n"
        last = text
        yield text


def _attempts_followed(platform: Platform, job_id: str, timestamps: bool) -> Iterator[str]:
    shown = 0  # attempts sent whole
    while True:
        job = platform.store.job(job_id)
        if job is None:
            return
        attempts = platform.store.attempts(job_id)
        for a in attempts[shown:]:
            if a.number > 1 or timestamps:
                yield _heading(a, timestamps)
            if a.finished_at is None:
                ended = yield from _following_attempt(platform, job_id, a.number, timestamps)
                if timestamps and ended is not None:
                    yield _heading(ended, timestamps)
            else:
                yield a.log
            shown += 1
        if job.status in FINISHED and shown >= len(attempts):
            return
        if platform.stopping:
            yield STOPPING
            return
        yield ""  # a pause


def _following_attempt(
    platform: Platform, job_id: str, number: int, timestamps: bool
) -> Generator[str, None, Attempt | None]:
    """One running attempt's output as it is printed (where this control plane reads it),
    then the rest of what the store kept of it once it has ended; returns the attempt as
    it ended (None if it is gone)."""
    sent: list[str] = []
    live = None
    try:
        while True:
            job = platform.store.job(job_id)
            ended = job is None or job.status != RUNNING or job.attempts != number
            if live is None and not ended:  # its script may not have started yet
                live = platform.live_log(job_id, number)
            if live is not None and (text := live.read()):
                sent.append(text)
                yield _stamped(text) if timestamps else text
            if ended:
                break
            if platform.stopping:  # the job may run for its whole grace period: leave now
                yield STOPPING
                return None
            yield ""  # a pause
    finally:
        if live is not None:
            live.close()
    stored = next((a for a in platform.store.attempts(job_id) if a.number == number), None)
    if stored is None:
        return None
    so_far = "".join(sent)
    if stored.log.startswith(so_far):
        rest = stored.log[len(so_far) :]
        yield _stamped(rest) if timestamps and rest else rest
    else:  # the stored log keeps the head and tail of a long one
        yield "\n[... the rest of this attempt's output is in its stored log ...]\n"
    return stored


def _stamped(text: str) -> str:
    now = _stamp(time.time())
    return "".join(f"{now} {line}" for line in text.splitlines(keepends=True))


@router.get("/system/jobs/{service}/{job}", dependencies=[ServiceReader])
def job_detail(service: str, job: str, platform: PlatformDep) -> dict[str, Any]:
    """One job with its attempts (ondrop): each with its pool, node, status, exit code,
    reason, `cause` (exit, timeout, oom, stopped, unavailable, lost, input_gone, internal;
    null while running or when it succeeded) and times."""
    found = _job(platform, service, job)
    origin = platform.store.origin(found.id)
    return {
        "id": found.id,
        "service": found.service,
        **job_json(found),
        # the original input this job descends from, through its chain of parent jobs
        "origin": None if origin is None else {"provider": origin.source, "key": origin.key},
        "attempt_list": [
            {
                "number": a.number,
                "pool": a.pool,
                "status": a.status,
                "exit_code": a.exit_code,
                "reason": a.reason,
                "start_time": rfc3339(a.started_at),
                "finish_time": rfc3339(a.finished_at),
                "duration": None
                if a.finished_at is None
                else round(a.finished_at - a.started_at, 6),
                "node": a.node,
                "cause": None if a.cause is None else str(a.cause),
            }
            for a in platform.store.attempts(found.id)
        ],
    }


@router.delete(
    "/system/logs/{service}/{job}",
    dependencies=[ServiceChanger],
    status_code=204,
    responses={**CHANGES, **errors(409, why={409: "the job is running"})},
)
def delete_job(service: str, job: str, platform: PlatformDep) -> Response:
    found = _job(platform, service, job)
    if found.status == RUNNING:
        raise ConflictError(f"job {job!r} is running; delete it once it has ended")
    platform.store.delete_job(found.id)
    platform.waiters.abandon([found.id], NotFoundError(f"job {found.id!r} was deleted"))
    return Response(status_code=204)


@router.post("/system/jobs/{service}/retry", dependencies=[ServiceChanger], responses=CHANGES)
def retry_failed(service: str, platform: PlatformDep) -> dict[str, Any]:
    """Run every failed job of the service again (ondrop); answers their ids."""
    platform.services.get(service)
    failed = [j.id for j in platform.store.jobs(service, status=FAILED)]
    retried = platform.store.retry_jobs(failed)
    platform.wake()
    return {"retried": retried}


@router.post(
    "/system/jobs/{service}/{job}/retry",
    dependencies=[ServiceChanger],
    responses={**CHANGES, **errors(409, why={409: "the job has not failed nor been cancelled"})},
)
def retry_job(service: str, job: str, platform: PlatformDep) -> dict[str, Any]:
    """Run a failed or cancelled job again, keeping its earlier attempts (ondrop)."""
    found = _job(platform, service, job)
    if not platform.store.retry_jobs([found.id]):
        raise ConflictError(
            f"job {job!r} is {found.status}; only failed or cancelled jobs are run again"
        )
    platform.wake()
    again = platform.store.job(found.id)
    assert again is not None
    return {"id": again.id, **job_json(again)}


@router.post(
    "/system/jobs/{service}/{job}/cancel",
    dependencies=[ServiceChanger],
    responses={**CHANGES, **errors(409, why={409: "the job has already ended"})},
)
def cancel_job(service: str, job: str, platform: PlatformDep) -> dict[str, Any]:
    """Cancel a queued job, or stop a running one (ondrop). A running job answers
    `Running` and ends `Cancelled` a moment later."""
    found = _job(platform, service, job)
    if found.status in FINISHED:
        raise ConflictError(f"job {job!r} has already ended ({PHASES[found.status]})")
    status = platform.cancel(found.id)
    return {"id": found.id, "status": PHASES.get(status, status)}


class Followed(BaseModel):
    """The jobs whose chains to follow."""

    jobs: list[str] = Field(
        min_length=1,
        max_length=FOLLOWED_MAX,
        description="job ids, of any services; each stands for every job of its chain",
        examples=[["split-5f0c6c2e-8a4f-4d0e-9a57-3c1b1f3e2d10"]],
    )


@router.post(
    "/system/chains",
    dependencies=[Admin],
    responses=errors(
        422,
        why={
            422: f"`jobs` is not a list of 1 to {FOLLOWED_MAX:,} job ids, or the body is not JSON"
        },
    ),
)
def chains(asked: Followed, platform: PlatformDep) -> dict[str, Any]:
    """Where the work these jobs belong to stands, down the whole chain (ondrop; what
    `ondrop put --wait` and `ondrop wait` follow): every job that descends from the
    same original inputs (the files dropped or uploaded, the invocations' bodies), by
    stage. `{"busy": bool, "stages": [{"service", "jobs": {queued, running, succeeded,
    failed, cancelled, refused}}], "failed": [job, ...]}`. `busy` is true while a job is
    queued or running, or one is still to start (a service that collects the family
    once the rest has ended); `stages` are in the order their first jobs were made;
    `failed` names up to 100 failed jobs in full (`id`, `service` and the job list's
    fields). 404 names a job that does not exist."""
    found = follow(platform.store, platform.intake, asked.jobs)
    return {
        "busy": found.busy,
        "stages": [{"service": s.service, "jobs": s.jobs} for s in found.stages],
        "failed": [{"id": j.id, "service": j.service, **job_json(j)} for j in found.failed],
    }
