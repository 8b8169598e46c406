"""/system/services: OSCAR's service CRUD; /system/apply to apply several at once, and
/system/services/{name}/reprocess for the files already in a service's input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from ondrop.access import Caller, changed, may_see, owned, seen
from ondrop.api.deps import PlatformDep, SignedIn
from ondrop.api.openapi import WRITES, errors
from ondrop.errors import DefinitionError
from ondrop.fdl import oscar
from ondrop.fdl.loader import load_text, parse_service
from ondrop.fdl.models import Service
from ondrop.platform import Platform
from ondrop.services import Ownership
from ondrop.store.base import FAILED, FINISHED, RUNNING

router = APIRouter(tags=["services"], responses=errors(401, 403, 500))
# Applying writes the store and makes the services' folders in their storage providers.
APPLYING = (409, 422, 502, *WRITES)
MAX_SOURCE = 4096  # characters of an apply's `source`, a file's path
MAX_FDL = 1 << 20  # characters of an FDL's text sent to apply
WHY = {
    409: "services would start each other in a loop",
    422: "an invalid definition (the message names the service and the field), or a body "
    "that is not JSON",
}

ServiceBody = Body(
    description="a service as OSCAR's API takes it (ondrop's fields may be added)",
    examples=[
        {
            "name": "grayify",
            "script": 'convert "$INPUT_FILE_PATH" -type Grayscale '
            '"$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"',
            "input": [{"storage_provider": "minio", "path": "grayify/in"}],
            "output": [{"storage_provider": "minio", "path": "grayify/out"}],
        }
    ],
)


@router.get("/system/services")
def list_services(platform: PlatformDep, who: SignedIn) -> list[dict[str, Any]]:
    """The services `who` may use: all of them for the admin."""
    return [oscar.item(s) for s in platform.services.all() if may_see(s, who)]


@router.get("/system/services/{name}", responses=errors(404))
def get_service(name: str, platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    return oscar.item(seen(platform.services.get(name), who))


def _ownership(platform: Platform, who: Caller) -> Ownership:
    """What `who` may apply, checked against the services as they are then."""
    groups, isolated = platform.settings.groups, platform.isolates_processes
    buckets = platform.buckets.owner
    return lambda service, before, services: owned(
        service, who, before, services, groups, isolated, buckets
    )


@router.post(
    "/system/services",
    status_code=201,
    responses=errors(*APPLYING, why={**WHY, 409: "the name is taken, or " + WHY[409]}),
)
def create_service(platform: PlatformDep, who: SignedIn, raw: Any = ServiceBody) -> dict[str, Any]:
    """Create a service (201), owned by the user who creates it; 409 when the name is
    taken."""
    service, warnings = parse_service(raw)
    applied = platform.apply([service], mode="create", ownership=_ownership(platform, who))
    made = oscar.item(platform.services.get(service.name))
    return {**made, "warnings": warnings + applied.warnings}


@router.put(
    "/system/services",
    status_code=204,
    responses=errors(404, *APPLYING, why={**WHY, 404: "no service of that name"}),
)
def update_service(platform: PlatformDep, who: SignedIn, raw: Any = ServiceBody) -> Response:
    """Replace a service (204): its owner's or the admin's; its token and owner are kept,
    blank secrets keep their values."""
    service, _ = parse_service(raw)
    platform.apply([service], mode="update", ownership=_ownership(platform, who))
    return Response(status_code=204)


@router.delete("/system/services/{name}", status_code=204, responses=errors(404, *WRITES))
def delete_service(name: str, platform: PlatformDep, who: SignedIn) -> Response:
    """Remove a service and its jobs (204): its owner or the admin. Files in its folders
    stay."""
    changed(platform.services.get(name), who)
    platform.delete_service(name)
    return Response(status_code=204)


@router.post("/system/apply", responses=errors(*APPLYING, why=WHY))
def apply(platform: PlatformDep, who: SignedIn, raw: Any = Body()) -> dict[str, Any]:
    """Create or update several services at once (ondrop; what `ondrop apply` calls):
    `{"services": [service, ...], "source": "the FDL file's path"}` (`source` optional),
    or an FDL's text read here as `ondrop apply` reads a file: `{"fdl": text, "scripts":
    {file name: text}}` (what the dashboard sends; it builds no image).
    All are checked together; on any error none changes. Answers `{created, updated,
    unchanged, changes: {service: [field, ...]}, left_alone: {service: files},
    warnings}`: `left_alone` counts the files already in a service's new input folders,
    which start no job (`POST /system/services/{name}/reprocess` starts them); a
    service last applied from another `source` is warned about."""
    if not isinstance(raw, dict) or ("services" in raw) == ("fdl" in raw):
        raise DefinitionError('expected {"services": [service, ...]} or {"fdl": text}')
    if "services" in raw and not isinstance(raw["services"], list):
        raise DefinitionError("services: expected a list of services")
    source = raw.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE or not source.isprintable():
        raise DefinitionError(
            f"source: expected the FDL file's path (at most {MAX_SOURCE} characters)"
        )
    services: list[Service] = []
    warnings: list[str] = []
    problems: list[str] = []
    if "fdl" in raw:
        services, warnings = _from_fdl(raw, source)
    for i, item in enumerate(raw.get("services") or []):
        try:
            service, found = parse_service(item, f"services[{i}]")
        except DefinitionError as exc:
            problems.append(str(exc))
            continue
        services.append(service)
        warnings += found
    if problems:
        raise DefinitionError("\n".join(problems))
    applied = platform.apply(services, source=source, ownership=_ownership(platform, who))
    return {
        "created": applied.created,
        "updated": applied.updated,
        "unchanged": applied.unchanged,
        "changes": applied.changes,
        "left_alone": applied.left_alone,
        "warnings": warnings + applied.warnings,
    }


def _from_fdl(raw: dict[str, Any], source: str) -> tuple[list[Service], list[str]]:
    """The services of `{"fdl": text, "scripts": {file name: text}}`, read as `ondrop
    apply` reads a file, its script files taken from `scripts`, never from this
    machine."""
    fdl, scripts = raw["fdl"], raw.get("scripts") or {}
    if not isinstance(fdl, str):
        raise DefinitionError("fdl: expected the FDL's text")
    if len(fdl) > MAX_FDL:
        raise DefinitionError(f"fdl: {len(fdl):,} characters; an FDL may have {MAX_FDL:,}")
    if not isinstance(scripts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scripts.items()
    ):
        raise DefinitionError("scripts: expected {file name: the script's text}")
    definition = load_text(fdl, source or "the FDL", scripts)
    return definition.services, definition.warnings


@router.post(
    "/system/services/{name}/reprocess",
    responses=errors(404, 502, *WRITES, why={404: "no service of that name"}),
)
def reprocess(name: str, platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    """Start jobs for the files already in the service's input folders (ondrop; as SCAR's
    `scar run`): one per file version its filters take that has no job of it yet, such
    as the files an apply left alone. Answers `{"jobs": [{service, job, input}],
    "already": N}`, N the files that had a job of it already."""
    changed(platform.services.get(name), who)
    jobs, already = platform.intake.reprocess(name)
    return {
        "jobs": [{"service": j.service, "job": j.id, "input": j.input_key} for j in jobs],
        "already": already,
    }


@router.get("/system/services/{name}/deployment", responses=errors(404))
def deployment(name: str, platform: PlatformDep, who: SignedIn) -> dict[str, Any]:
    """OSCAR's deployment summary. An exposed service's instances are its replicas (with
    `replicas`, `desired_instances`, `min_scale`, `max_scale`, `restarts` beside); any
    other's are its jobs. `state` is `ready`, or `degraded` while its
    latest ended job failed (`reason` says why); `active_instances` are its jobs running
    now, `affected_instances` its failed ones."""
    service = platform.services.get(name)
    seen(service, who)
    if service.expose is not None:  # its replicas
        return platform.exposed.status(name)
    counts = platform.store.count_jobs(name)
    ended = next((j for j in platform.store.jobs(name, 0, 50) if j.status in FINISHED), None)
    failed = ended is not None and ended.status == FAILED
    answer: dict[str, Any] = {
        "state": "degraded" if failed else "ready",
        "active_instances": counts.get(RUNNING, 0),
        "affected_instances": counts.get(FAILED, 0),
        "resource_kind": "jobs",
    }
    if failed and ended is not None:
        answer["reason"] = f"its latest job, {ended.id}, failed: {ended.reason}"
    return answer


@router.get("/system/services/{name}/deployment/logs", responses=errors(404, 422))
def deployment_logs(
    name: str,
    platform: PlatformDep,
    who: SignedIn,
    timestamps: bool = False,
    tailLines: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> dict[str, Any]:
    """OSCAR's deployment logs: the last `tailLines` lines (default 200) of the output of
    an exposed service's newest replica (or of the last one that ended), or of any other
    service's latest job (`/system/logs/{service}/{job}` has every job's). With
    `timestamps`, each entry has its attempt's end time."""
    service = platform.services.get(name)
    seen(service, who)
    if service.expose is not None:  # its replicas' output
        what, text = platform.exposed.log(name, tailLines)
        entries = [{"message": line} for line in text.splitlines()[-tailLines:]]
        return {"service_name": name, "available": bool(text), "message": what, "entries": entries}
    latest = platform.store.jobs(name, 0, 1)
    answer: dict[str, Any] = {"service_name": name, "available": bool(latest), "entries": []}
    if not latest:
        answer["message"] = "the service has run no job yet"
        return answer
    attempts = platform.store.attempts(latest[0].id)
    last = attempts[-1] if attempts else None
    text = last.log if last is not None else ""
    live = (
        None
        if last is None or last.finished_at is not None
        else (platform.live_log(latest[0].id, last.number))
    )
    if live is not None:
        with live:
            text = live.read() + live.rest()
    lines = text.splitlines()[-tailLines:]
    stamp = ""
    if timestamps and last is not None and last.finished_at is not None:
        stamp = datetime.fromtimestamp(last.finished_at, UTC).isoformat().replace("+00:00", "Z")
    answer["message"] = f"the output of job {latest[0].id}" + (
        "" if last is None or last.finished_at is not None else " so far (it is running)"
    )
    answer["entries"] = [
        {"message": line, **({"timestamp": stamp} if stamp else {})} for line in lines
    ]
    return answer
