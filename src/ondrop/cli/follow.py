"""What `ondrop put --wait` and `ondrop wait` show: a bar per stage of the work some jobs
belong to, down the whole chain, until it has ended; then what failed.

`ondrop put` keeps the jobs it started in the data folder (`last-put.json`), so that a
later `ondrop wait` follows them.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from ondrop.errors import DefinitionError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ondrop.client import Client

LAST_PUT = "last-put.json"
ENDED = ("succeeded", "failed", "cancelled", "refused")
FAILED_NAMED = 10  # failed jobs named one by one; the rest are counted


def remember_put(data: Path, url: str, jobs: list[str]) -> None:
    """Keep the jobs the latest `put` started, for `ondrop wait`."""
    if not data.is_dir():
        return  # a platform elsewhere and no data folder here: --wait still follows them
    kept = data / LAST_PUT
    scratch = kept.with_name(f".{LAST_PUT}.{os.getpid()}.part")  # one per command at once
    try:
        scratch.write_text(json.dumps({"url": url, "jobs": jobs}))
        scratch.replace(kept)
    except OSError as exc:  # the upload is done: only a later plain `ondrop wait` misses it
        scratch.unlink(missing_ok=True)
        Console(stderr=True, markup=False).print(
            f"warning: cannot keep the jobs for `ondrop wait` in {kept}: {exc.strerror or exc}"
        )


def last_put(data: Path, url: str) -> list[str]:
    """The jobs the latest `put` to the platform at `url` started."""
    kept: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        kept = dict(json.loads((data / LAST_PUT).read_text()))
    if not kept:
        raise DefinitionError(
            "there is no `ondrop put` to wait for: name a service (ondrop wait SERVICE), "
            "or upload with `ondrop put SERVICE FILE... --wait`"
        )
    if kept.get("url") != url:
        raise DefinitionError(
            f"the latest `ondrop put` went to the platform at {kept.get('url')}, not to "
            f"{url}: name a service (ondrop wait SERVICE)"
        )
    return [str(j) for j in kept.get("jobs", [])]


def follow(
    client: Client, jobs: list[str], console: Console, timeout: float | None
) -> dict[str, Any]:
    """Show a bar per stage of the work `jobs` belong to until it has ended; where it
    stands then (Client.chains)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {}
        return client.wait(jobs, timeout, on_progress=lambda found: _show(progress, bars, found))


def _show(progress: Progress, bars: dict[str, TaskID], found: dict[str, Any]) -> None:
    for stage in found["stages"]:
        counts = stage["jobs"]
        name = stage["service"]
        if name not in bars:
            bars[name] = progress.add_task(name, total=None, note="")
        notes = [f"{counts[s]} {s}" for s in ("running", "failed", "cancelled") if counts[s]]
        progress.update(
            bars[name],
            total=sum(counts.values()),
            completed=sum(counts[s] for s in ENDED),
            note=", ".join(notes),
        )
    width = max(len(n) for n in bars) if bars else 0
    for name, bar in bars.items():
        progress.update(bar, description=name.rjust(width))


def verdict(found: dict[str, Any], out: Console, err: Console, service: str | None = None) -> int:
    """Say how the work ended; the exit status: 1 when a job failed (of `service` only,
    when given), else 0."""
    stages = found["stages"]
    if service is not None:
        mine = [s for s in stages if s["service"] == service]
        if not mine:
            out.print(f"no job of {service} was in the work queued or running")
            return 0
        others = [s for s in stages if s["service"] != service]
        stages = mine
    else:
        others = []
    counts = {s: sum(st["jobs"][s] for st in stages) for s in ENDED}
    failed = [j for j in found["failed"] if service in (None, j["service"])]
    for stage in others:  # told, not judged
        if stage["jobs"]["failed"]:
            err.print(f"{stage['jobs']['failed']} job(s) of {stage['service']} failed too")
    for status in ("cancelled", "refused"):
        if counts[status]:
            err.print(f"{counts[status]} job(s) {status}")
    if counts["failed"]:
        err.print(
            Text.assemble(
                (f"{counts['failed']} job(s) failed", "red"), f", {counts['succeeded']} succeeded:"
            )
        )
        for job in failed[:FAILED_NAMED]:
            why = job.get("reason") or f"exit {job.get('exit_code')}"
            err.print(f"  {job['service']} {job['id']} ({job.get('input') or '-'}): {why}")
        if counts["failed"] > min(len(failed), FAILED_NAMED):
            err.print(f"  ... and {counts['failed'] - min(len(failed), FAILED_NAMED)} more")
        if failed:
            first = failed[0]
            err.print(f"see `ondrop logs {first['service']} {first['id']}`")
        return 1
    by_stage = ", ".join(f"{s['service']} {s['jobs']['succeeded']}" for s in stages)
    out.print(f"{counts['succeeded']} job(s) succeeded ({by_stage})")
    return 0
