"""The supervisor: one job's stage in -> run -> stage out, outside any container.

It lives in the platform's long-lived workers (no interpreter start per job),
joins storage and runtime, and is the only place that knows the script's
environment contract.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ondrop.errors import (
    DiskFullError,
    NotFoundError,
    OndropError,
    StorageError,
    blamed,
    disk_full,
    retryable,
)
from ondrop.events import shapes
from ondrop.events.base import HTTP_SOURCE, INVOKE, OBJECT
from ondrop.events.payloads import Payloads
from ondrop.fdl.models import Service
from ondrop.joblog import LiveLog, read_log, redact
from ondrop.jobs import Cause, JobSpec, ObjectRef, Report
from ondrop.runtime.base import RunResult, RunSpec, Runtime
from ondrop.runtime.container import CONTAINER_FILE
from ondrop.runtime.folders import FOLDER, empty, remove, remove_folder
from ondrop.runtime.process import PID_FILE
from ondrop.storage import LocalStorage, Providers
from ondrop.storage.base import ObjectInfo, check_key, join_key
from ondrop.store.base import FAILED, INTERRUPTED, SUCCEEDED, Outcome

log = logging.getLogger(__name__)

EVENT_ENV_LIMIT = 96 * 1024  # Linux refuses a single environment string over 128 KiB

# The runtime for a service, or the reason it has none.
RuntimeChooser = Callable[[Service], "Runtime | str"]
# Told of the folder whose file system a job found full (ENOSPC) while staging.
FullHook = Callable[[Path], None]


@dataclass(frozen=True)
class Folders:
    work: Path  # one folder per running job, removed when it ends
    results: Path  # outputs of /run jobs, until the waiting client has them


class Ledger(Protocol):
    """What a supervisor must record before it writes an output (on the control plane, the
    store; on a node, a call back to it): that `job_id` writes the object `key`, so that
    the object's event is known as that job's output when it arrives."""

    def record_output(
        self, source: str, key: str, job_id: str, attempt: int | None = None
    ) -> None: ...


class Supervisor:
    """Runs one JobSpec: stage in, run the script, stage out. It needs no store: what must
    be recorded before an output is written goes through the Ledger."""

    def __init__(
        self,
        ledger: Ledger,
        providers: Providers,
        runtime_for: RuntimeChooser,
        folders: Folders,
        payloads: Payloads,
        on_full: FullHook | None = None,
    ) -> None:
        self.payloads = payloads
        self.on_full = on_full
        self.ledger = ledger
        self.providers = providers
        self.runtime_for = runtime_for
        self.folders = folders
        for folder in (folders.work, folders.results):
            folder.mkdir(parents=True, exist_ok=True)
        self.workspaces = Workspaces(folders.work)
        # The logs of the scripts running now, by job: (attempt, the file, the secrets).
        self._logs: dict[str, tuple[int, Path, tuple[str, ...]]] = {}
        self._readers: dict[str, list[LiveLog]] = {}  # told when the script ends
        self._logs_lock = threading.Lock()

    def live_log(self, job_id: str, attempt: int) -> LiveLog | None:
        """The log of that attempt's script while it runs here, opened now (it reads that
        file even once the folder is another job's); None when it does not run here."""
        with self._logs_lock:  # not while the script ends and its folder is given back
            found = self._logs.get(job_id)
            if found is None or found[0] != attempt:
                return None
            live = LiveLog.open(found[1], found[2])
            if live is not None:
                self._readers.setdefault(job_id, []).append(live)
            return live

    def close(self) -> None:
        """Delete the work folders kept for the next jobs (the platform stops)."""
        self.workspaces.close()

    def clean_orphans(
        self, runtimes: Iterable[Runtime], results_before: float | None = None
    ) -> int:
        """Kill and remove what a platform that died left behind: processes or containers
        of its jobs, their work folders, unclaimed /run results (start-up; nothing runs
        here). With `results_before` (seconds since the epoch), only the results made
        before it: the folder is shared with control planes that may be writing some."""
        reaped = 0
        for entry in self.folders.work.iterdir():
            for runtime in runtimes:
                reaped += runtime.reap(entry)
            shutil.rmtree(entry, ignore_errors=True)
        for entry in self.folders.results.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if results_before is not None and entry.lstat().st_mtime >= results_before:
                    continue
            shutil.rmtree(entry, ignore_errors=True)
        return reaped

    def run(self, spec: JobSpec, script_ended: Callable[[], None] = lambda: None) -> Report:
        """Stage in, run the script, stage out. `script_ended` is called as the script's
        process (or container) is gone, before the outputs are stored."""
        stored: list[tuple[str, ObjectInfo]] = []
        outcome = self._run(spec, script_ended, stored)
        return Report(spec.job_id, spec.attempt, outcome, tuple(stored))

    def _run(
        self,
        spec: JobSpec,
        script_ended: Callable[[], None],
        stored: list[tuple[str, ObjectInfo]],
    ) -> Outcome:
        service, resources = spec.service, spec.resources
        runtime = self.runtime_for(service)
        if isinstance(runtime, str):  # not the job's fault: it waits for the platform
            return Outcome(FAILED, None, f"{runtime}; the job waits", cause=Cause.UNAVAILABLE)
        try:
            work = self.workspaces.take(service.name)
        except OSError as exc:
            if not disk_full(exc):
                raise
            return self._no_space("staging in", exc, self.folders.work)
        clean = True  # nothing of the job can be left running in its folder
        outputs = work / "output"
        logfile = work / "log"
        try:
            script = work / "script"
            try:
                input_path = self._stage_in(spec, work / "input")
                _write_changed(script, service.script)
            except NotFoundError as exc:
                return Outcome(FAILED, None, f"input is gone: {exc}", cause=Cause.INPUT_GONE)
            except (OndropError, OSError) as exc:
                # Everything staging in writes lands in the work folder.
                if disk_full(exc):
                    return self._no_space("staging in", exc, self.folders.work)
                if not (isinstance(exc, StorageError) or retryable(exc)):
                    raise
                cause = Cause.UNAVAILABLE if retryable(exc) else Cause.INTERNAL
                return Outcome(
                    FAILED, None, f"staging in failed: {exc}", cause=cause, provider=_of(exc)
                )
            env = self._environment(spec, runtime, input_path, work)
            # The GPUs the job was given, and no others (CUDA and NVIDIA's container tools
            # read these); a job given none sees none.
            env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.devices)
            run = RunSpec(
                job_id=spec.job_id,
                script=script,
                workdir=work,
                env=env,
                timeout=resources.timeout,
                log=logfile,
                image=service.image,
                memory=resources.memory,
                cpu=resources.cpu,
                network=service.network,
                gpus=spec.devices,
                service=service.name,
                warm=service.kept_warm,
            )
            clean = False
            secrets = tuple(service.environment.secrets.values())
            with self._logs_lock:
                self._logs[spec.job_id] = (spec.attempt, logfile, secrets)
            try:
                result = runtime.run(run)
            finally:
                with self._logs_lock:
                    self._logs.pop(spec.job_id, None)
                    for reader in self._readers.pop(spec.job_id, []):
                        reader.end()
            clean = result.exit_code is not None  # it ended by itself, not killed
            script_ended()
            text = redact(read_log(logfile), secrets)
            if result.interrupted:
                return Outcome(INTERRUPTED, None, result.reason, text, result.cause)
            if not result.ok:
                return Outcome(FAILED, result.exit_code, result.reason, text, result.cause)
            try:
                self._stage_out(spec.job_id, spec.attempt, service, outputs, stored)
                if spec.keep_results and spec.results_to is not None:
                    self._send_results(spec.results_to, outputs, text)
                elif spec.keep_results:
                    self._keep_results(spec.job_id, outputs, text)
            except (OndropError, OSError) as exc:
                if disk_full(exc):  # of a provider, the store's or the results' folder
                    return self._no_space("staging out", exc, self.folders.results, 0, text)
                if isinstance(exc, OSError):
                    raise
                cause = Cause.UNAVAILABLE if retryable(exc) else Cause.INTERNAL
                reason = f"storing outputs failed: {exc}"
                return Outcome(FAILED, 0, reason, text, cause, provider=_of(exc))
            summary = f"{len(stored)} output(s)" if service.output else ""
            log.debug("job %s done in %.3f s %s", spec.job_id, result.duration, summary)
            return Outcome(SUCCEEDED, 0, "", text)
        finally:
            # The next job's script already runs (its slot was given back): this job's
            # thread can afford to empty its folder itself.
            self.workspaces.give(work, service.name, clean)

    def _no_space(
        self,
        phase: str,
        exc: BaseException,
        folder: Path,
        exit_code: int | None = None,
        text: str = "",
    ) -> Outcome:
        """A job that met a full disk while staging: it waits for space and tries again,
        without using up its retries, like one that met a store that was down."""
        where: Path | None = exc.folder if isinstance(exc, DiskFullError) else folder
        if where is not None and self.on_full is not None:
            self.on_full(where)
        return Outcome(
            FAILED,
            exit_code,
            f"{phase}: no space left{f' in {where}' if where else ''} ({exc}); the job waits "
            "for space",
            text,
            Cause.UNAVAILABLE,
        )

    def _stage_in(self, spec: JobSpec, inputs: Path) -> Path:
        """Stage the spec's inputs into the input folder; the input file's path (a
        collecting job's is its manifest)."""
        if spec.manifest is not None:
            return self._gather(spec, inputs)
        if not spec.inputs:  # an invocation with no body
            dest = inputs / Path(check_key(spec.event.key or "event-file")).name
            use_spare(dest)
            dest.write_bytes(b"")
            return dest
        first = spec.inputs[0]
        dest = inputs / Path(check_key(first.name)).name
        use_spare(dest)
        self._fetch(first.ref, dest)
        return dest

    def _fetch(self, ref: ObjectRef, dest: Path) -> None:
        if ref.provider == HTTP_SOURCE:  # an invocation's body, kept by the control plane
            try:
                shutil.copyfile(self.payloads.path(ref.key), dest)
            except FileNotFoundError:
                raise NotFoundError("the invocation's body is no longer kept") from None
        else:
            with blamed(ref.provider):
                self.providers.get(ref.provider).get(ref.key, dest)

    def _gather(self, spec: JobSpec, inputs: Path) -> Path:
        """A collecting job's input: the files the control plane listed, staged into the
        input folder, and its manifest as the input file, naming only the files that
        could be staged (one deleted since it was stored is left out)."""
        assert spec.manifest is not None
        missing: set[str] = set()
        for staged in spec.inputs:
            name = Path(check_key(staged.name)).name
            try:
                self._fetch(staged.ref, inputs / name)
            except NotFoundError:
                missing.add(staged.name)
        manifest = dict(spec.manifest)
        manifest["jobs"] = [
            {**job, "files": [f for f in job.get("files", []) if f not in missing]}
            for job in manifest.get("jobs", [])
        ]
        path = inputs / Path(check_key(spec.manifest_name)).name
        path.write_text(json.dumps(manifest, indent=2))
        return path

    def _environment(
        self, spec: JobSpec, runtime: Runtime, input_path: Path, work: Path
    ) -> dict[str, str]:
        """The script's environment contract, with paths as the script sees them; the
        runtime adds its base (PATH, HOME...) under it."""
        event, service = spec.event, spec.service
        env = dict(service.environment.variables)
        env.update(service.environment.secrets)
        if event.kind == INVOKE:  # an API Gateway event's query: CONT_VAR_<name>
            env.update(shapes.variables(event.body))
        env.update(
            INPUT_FILE_PATH=runtime.inside(work, input_path),
            TMP_INPUT_DIR=runtime.inside(work, work / "input"),
            TMP_OUTPUT_DIR=runtime.inside(work, work / "output"),
            TMPDIR=runtime.inside(work, work / "tmp"),
            JOB_UUID=spec.job_id,
            JOB_ATTEMPT=str(spec.attempt),
            OSCAR_SERVICE_NAME=service.name,
            EVENT_TIME=event.iso_time,
        )
        if event.body and len(event.body) <= EVENT_ENV_LIMIT:
            env["EVENT"] = event.body
        if event.kind == OBJECT:
            bucket, _, rest = event.key.partition("/")
            env["STORAGE_OBJECT_KEY"] = rest or bucket  # within the bucket, as OSCAR gives it
            env["STORAGE_OBJECT_PATH"] = event.key
            env["STORAGE_PROVIDER"] = event.source
        return env

    def _stage_out(
        self,
        job_id: str,
        attempt: int,
        service: Service,
        outputs: Path,
        stored: list[tuple[str, ObjectInfo]],
    ) -> None:
        """Store the outputs, each as a new object: a job's file is copied, never moved or
        linked into a store, so neither its owner, its setuid or setgid bit nor its inode
        (which the job could still hold) reaches anyone who reads the store."""
        files = output_files(outputs)
        copies = [(t, p) for t in service.output for p in files if t.accepts(p.name)]
        for target, path in copies:
            provider = self.providers.get(target.storage_provider)
            relative = path.relative_to(outputs).as_posix()
            key = join_key(target.path, check_key(relative, "output file name"))
            self.ledger.record_output(provider.name, key, job_id, attempt)
            try:
                with blamed(provider.name):
                    info = provider.put_file(key, path)
            except StorageError as exc:
                if not disk_full(exc):
                    raise
                folder = provider.root if isinstance(provider, LocalStorage) else None
                raise DiskFullError(f"{provider.name} is full: {exc}", folder) from exc
            stored.append((provider.name, info))

    def _send_results(self, to: ObjectRef, outputs: Path, text: str) -> None:
        """A /run job's outputs and log, for the control plane on another machine: under
        the prefix `to` (output/..., log)."""
        provider = self.providers.get(to.provider)
        with blamed(provider.name):
            for path in output_files(outputs):
                relative = check_key(path.relative_to(outputs).as_posix(), "output file name")
                provider.put_file(join_key(to.key, f"output/{relative}"), path)
            provider.put(join_key(to.key, "log"), io.BytesIO(text.encode()))

    def _keep_results(self, job_id: str, outputs: Path, text: str) -> None:
        keep = self.folders.results / job_id
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir()
        shutil.move(str(outputs), keep / "output")
        outputs.mkdir()  # for the work folder's next job
        (keep / "log").write_text(text)


def _of(exc: BaseException) -> str:
    """The storage provider that raised `exc`, if a provider did."""
    return exc.provider if isinstance(exc, StorageError) else ""


def output_files(folder: Path) -> list[Path]:
    """The regular files a script left in `folder`, in name order. Links are never
    followed: a script (in a container above all) must not make the platform read or
    store a file of the host's."""
    if folder.is_symlink():
        return []
    found = []
    for top, _dirs, files in os.walk(folder):  # os.walk does not enter linked folders
        for name in files:
            path = Path(top, name)
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path)
    return sorted(found)


class Workspaces:
    """The folders jobs run in: input/, output/ and tmp/, beside the script, its log and its
    pid, one job at a time in each. A job's folder is emptied and kept for the next job of
    the same service rather than deleted: making folders and files costs more, on many file
    systems, than the rest of the platform's work for a tiny job. A folder is only kept when
    its job ended by itself and the folder is as the platform made it; it is deleted
    otherwise."""

    def __init__(self, root: Path, keep: int = 64) -> None:
        self.root = root
        self.keep = keep  # folders kept at most; more are deleted after their job
        self._free: dict[str, list[Path]] = {}  # service -> its folders, emptied
        self._kept = 0
        self._lock = threading.Lock()
        self._made = itertools.count(1)
        # What mkdir gave the folders (read off the first one made, not by setting the
        # umask, which would race with other threads): a job may not change it.
        self._mode: int | None = None

    def take(self, service: str) -> Path:
        with self._lock:
            free = self._free.get(service)
            if free:
                self._kept -= 1
                return free.pop()
        while True:
            work = self.root / f"job-{next(self._made)}"
            try:
                work.mkdir()
                break
            except FileExistsError:
                continue  # a name the platform before this one used
        for part in PARTS:
            (work / part).mkdir()
        if self._mode is None:
            self._mode = stat.S_IMODE((work / PARTS[0]).stat().st_mode)
        return work

    def give(self, work: Path, service: str, clean: bool) -> None:
        """`work`'s job is over: keep the folder, emptied, for the next job of `service`,
        or delete it: when its job did not end `clean` (it was killed, or its runtime
        failed: something of it may still run), when enough are kept, or when it is not
        as the platform made it."""
        with self._lock:
            room = self._kept < self.keep
        if clean and room and self._mode is not None and _clear(work, self._mode):
            with self._lock:
                self._free.setdefault(service, []).append(work)
                self._kept += 1
        else:
            remove_folder(work)

    def close(self) -> None:
        with self._lock:
            kept = [work for free in self._free.values() for work in free]
            self._free, self._kept = {}, 0
        for work in kept:
            remove_folder(work)


PARTS = ("input", "output", "tmp")  # the folders of a work folder, as the script sees them
# The last job's input file, emptied: the next job's input is written into it (on many file
# systems a new file costs more than writing into one that exists).
SPARE = "input.spare"
# The files each job writes whole (its script, what its runtime needs to find it after a
# crash), its log, and the spare: kept, to be written over.
KEPT = ("script", "log", PID_FILE, CONTAINER_FILE, SPARE)
# Opening a file of a work folder: never through a link, never waiting on a FIFO.
_FILE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def use_spare(dest: Path) -> None:
    """Move the work folder's spare file to `dest`, in its input folder, for the job's input
    to be written into; nothing when there is none."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(dest.parent.parent / SPARE, dest)


def _clear(work: Path, mode: int) -> bool:
    """Empty `work` for its next job; False when it cannot be, or holds something other than
    the platform made (a link where a folder was, say), and must be deleted instead."""
    try:
        fd = os.open(work, FOLDER)
    except OSError:
        return False
    try:
        with os.scandir(fd) as entries:
            names = {entry.name for entry in entries}
        if not names.issuperset(PARTS):
            return False
        for name in names:
            if name in PARTS:
                sub = os.open(name, FOLDER, dir_fd=fd)  # refuses a link
                try:
                    if stat.S_IMODE(os.fstat(sub).st_mode) != mode:
                        return False  # a job changed who may write in it
                    if name == "input":
                        _empty_input(sub, fd)
                    else:
                        empty(sub)
                finally:
                    os.close(sub)
            elif name not in KEPT or not _truncate(name, fd, keep=name != "log"):
                remove(name, fd)  # what the script left, or a kept file it tampered with
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _truncate(name: str, fd: int, keep: bool = False) -> bool:
    """Empty the file `name` in the folder open as `fd` (its content kept with `keep`);
    False when it is not a plain file of this folder alone: a link or FIFO put in its
    place, or a file hard-linked elsewhere (a stored output, say), which must be left
    whole and the name deleted."""
    try:
        f = os.open(name, os.O_WRONLY | _FILE, dir_fd=fd)
    except OSError:
        return False
    try:
        info = os.fstat(f)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return False
        if not keep:
            os.ftruncate(f, 0)
        return True
    finally:
        os.close(f)


def _write_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it holds that already (the script of the same service's
    last job in a kept work folder): reading it back is cheaper than writing it."""
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _FILE, 0o666)
    try:
        if os.read(fd, len(data) + 1) != data:
            os.ftruncate(fd, 0)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], written)
    finally:
        os.close(fd)


def _empty_input(fd: int, work: int) -> None:
    """Delete what is in the input folder open as `fd`, but for a plain file kept, emptied,
    as the spare of the work folder open as `work`."""
    with os.scandir(fd) as entries:
        found = [(entry.name, entry.is_file(follow_symlinks=False)) for entry in entries]
    spare = False
    for name, regular in found:
        if regular and not spare and _truncate(name, fd):
            os.rename(name, SPARE, src_dir_fd=fd, dst_dir_fd=work)
            spare = True
        else:
            remove(name, fd)


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at `path`; refuses a link put there meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


__all__ = ["Folders", "Ledger", "RunResult", "Supervisor"]
