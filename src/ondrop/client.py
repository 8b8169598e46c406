"""`ondrop.Client`: the Python client of the REST API; the CLI is built on it.

with Client() as c:                       # URL and credentials from the environment
    c.upload("minio.default", "photos/in/cat.png", Path("cat.png"))
    c.wait_idle("thumbnails")
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from ondrop.errors import ClientError, DefinitionError
from ondrop.settings import Settings

ENDPOINT_FILE = "endpoint.json"  # written by `ondrop up` into its data folder
CREDENTIALS_FILE = "admin.json"  # the admin's credentials, kept there by `ondrop up`
DEFAULT_URL = "http://127.0.0.1:8030"
Progress = Callable[[int], None]  # called with the number of bytes just moved
WAIT_PAUSE = 0.5  # seconds between two looks at work being waited for, at most


@dataclass(frozen=True)
class RunOutput:
    """What `/run` answered: `kind` is "file", "zip" or "log"."""

    job_id: str
    kind: str
    data: bytes
    filename: str


def connection(settings: Settings) -> tuple[str, str, str]:
    """(url, user, password) from the settings, else from the data folder of `ondrop up`."""
    data = Path(settings.data)
    endpoint: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        endpoint = json.loads((data / ENDPOINT_FILE).read_text())
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads((data / CREDENTIALS_FILE).read_text())
    url = settings.url or str(endpoint.get("url") or DEFAULT_URL)
    user = settings.admin_user or str(endpoint.get("user") or stored.get("user") or "admin")
    password = settings.admin_password
    if not password and stored.get("user", "admin") == user:
        password = str(stored.get("password", ""))
    return url.rstrip("/"), user, password


class Client:
    def __init__(
        self,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Talk to the platform at `url` as the admin (`user`, `password`) or with a service
        `token`. What is not given comes from ONDROP_URL, ONDROP_ADMIN_USER,
        ONDROP_ADMIN_PASSWORD, or the data folder of a local `ondrop up`."""
        if url is None or (user is None and token is None):
            found = connection(Settings.load())
            url = url or found[0]
            user = user if user is not None else found[1]
            password = password if password is not None else found[2]
        self.url = url.rstrip("/")
        # No password, no credentials sent: the platform then says none were given.
        auth = None if token or not password else httpx.BasicAuth(user or "", password)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # A platform on plain http needs no TLS (redirects are not followed): no
        # certificate bundle to load, a good part of a short command's start.
        self._http = httpx.Client(
            base_url=self.url,
            auth=auth,
            headers=headers,
            timeout=timeout,
            verify=self.url.startswith("https://"),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError.of(
                f"the platform at {self.url} did not answer in time", 504
            ) from None
        except httpx.TransportError as exc:
            raise ClientError.of(
                f"cannot reach the platform at {self.url} ({exc}); is `ondrop up` running? "
                "If it runs on another data folder, name that folder with --data or "
                "ONDROP_DATA (its address is kept there); on another machine, set --url or "
                "ONDROP_URL",
                503,
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    # -- platform -------------------------------------------------------------------
    def health(self) -> bool:
        try:
            return self._request("GET", "/health").text.strip() == "Ok"
        except ClientError:
            return False

    def info(self) -> dict[str, Any]:
        return dict(self._request("GET", "/system/info").json())

    def status(self, service: str | None = None) -> dict[str, Any]:
        params = {"service": service} if service else {}
        return dict(self._request("GET", "/system/status", params=params).json())

    # -- services -------------------------------------------------------------------
    def services(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/system/services").json())

    def service(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/system/services/{quote(name)}").json())

    def apply(
        self, services: Path | str | dict[str, Any] | list[dict[str, Any]], source: str = ""
    ) -> dict[str, Any]:
        """Create or update services, all checked together: from an FDL file (a path, in
        OSCAR's, SCAR's or ondrop's shape), a service (a dict), or a list of them.
        Answers `created`, `updated` (with `changes`: the fields), `unchanged`,
        `left_alone` (files already in new input folders, which started no job) and
        `warnings`, the file's own included. `source` names where they come from (a
        file's path is its own), so that one applied from elsewhere before is warned of."""
        warnings: list[str] = []
        if isinstance(services, Path | str):
            from ondrop.fdl.loader import load_file

            path = Path(services)
            definition = load_file(path)
            if definition.builds:
                raise DefinitionError(
                    f"{path} builds images ({', '.join(sorted(definition.builds))}): apply it "
                    "with `ondrop apply`, which builds them with the local engine"
                )
            services = [s.model_dump(exclude={"token"}) for s in definition.services]
            warnings, source = definition.warnings, source or str(path.resolve())
        elif isinstance(services, dict):
            services = [services]
        body: dict[str, Any] = {"services": services}
        if source:
            body["source"] = source
        answer = dict(self._request("POST", "/system/apply", json=body).json())
        answer["warnings"] = warnings + [w for w in answer["warnings"] if w not in warnings]
        return answer

    def reprocess(self, service: str) -> dict[str, Any]:
        """Start jobs for the files already in the service's input folders, one per file
        version with none yet: `{"jobs": [{service, job, input}], "already": N}`."""
        return dict(self._request("POST", f"/system/services/{quote(service)}/reprocess").json())

    def delete_service(self, name: str) -> None:
        self._request("DELETE", f"/system/services/{quote(name)}")

    # -- files ----------------------------------------------------------------------
    def upload(
        self, provider: str, key: str, path: Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Store the local file `path` at `key`; the answer lists the jobs it started."""
        size = path.stat().st_size
        with path.open("rb") as f:
            response = self._request(
                "PUT",
                f"/system/files/{quote(provider)}/{quote(key)}",
                content=_chunks(f, progress),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        return dict(response.json())

    def upload_many(
        self,
        provider: str,
        folder: str,
        paths: Sequence[Path],
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Store the local files `paths` under `folder`, each by its name, in one request
        (a tar, streamed; POST /system/files/{provider}): all or none, their jobs recorded
        together. The answer lists each object with the jobs it started."""
        size, body = _tar(paths, progress)
        response = self._request(
            "POST",
            f"/system/files/{quote(provider)}",
            params={"prefix": folder},
            content=body,
            headers={"Content-Length": str(size), "Content-Type": "application/x-tar"},
        )
        return dict(response.json())

    def download(
        self, provider: str, key: str, dest: Path, progress: Progress | None = None
    ) -> int:
        """Write the object at `key` to the local file `dest`; returns its size. The file
        appears under its name only when complete: it is written beside it under a hidden
        name, removed if the download stops (an error, a Ctrl-C)."""
        url = f"/system/files/{quote(provider)}/{quote(key)}"
        size = 0
        partial = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with partial.open("xb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                partial.replace(dest)
        except httpx.TransportError as exc:
            raise ClientError.of(f"download from {self.url} failed: {exc}", 503) from None
        finally:
            partial.unlink(missing_ok=True)
        return size

    def list_files(self, provider: str, prefix: str = "") -> list[dict[str, Any]]:
        response = self._request(
            "GET", f"/system/files/{quote(provider)}", params={"prefix": prefix}
        )
        return list(response.json()["objects"])

    # -- jobs -----------------------------------------------------------------------
    def jobs(self, service: str, status: str | None = None) -> dict[str, dict[str, Any]]:
        """Every job of `service` by id, newest first."""
        params: dict[str, Any] = {"limit": 0}
        if status:
            params["status"] = status
        return dict(
            self._request("GET", f"/system/logs/{quote(service)}", params=params).json()["jobs"]
        )

    def job(self, service: str, job: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/system/jobs/{quote(service)}/{quote(job)}").json())

    def logs(self, service: str, job: str, timestamps: bool = False) -> str:
        """The job's output so far, attempt by attempt."""
        params = {"timestamps": "true"} if timestamps else {}
        return self._request(
            "GET", f"/system/logs/{quote(service)}/{quote(job)}", params=params
        ).text

    def follow_logs(self, service: str, job: str, timestamps: bool = False) -> Iterator[str]:
        """The job's output as it is printed, until the job has ended for good."""
        params = {"follow": "true", "timestamps": str(timestamps).lower()}
        path = f"/system/logs/{quote(service)}/{quote(job)}"
        try:
            # A script may print nothing for long: no read deadline.
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise ClientError.of(f"following the log at {self.url} failed: {exc}", 503) from None

    def retry(self, service: str, job: str | None = None) -> list[str]:
        """Run a failed or cancelled job again, or every failed job when `job` is None."""
        if job is None:
            answer = self._request("POST", f"/system/jobs/{quote(service)}/retry").json()
            return list(answer["retried"])
        self._request("POST", f"/system/jobs/{quote(service)}/{quote(job)}/retry")
        return [job]

    def cancel(self, service: str, job: str) -> str:
        """Cancel a queued job or stop a running one; returns its status now."""
        answer = self._request("POST", f"/system/jobs/{quote(service)}/{quote(job)}/cancel")
        return str(answer.json()["status"])

    def delete_jobs(self, service: str, all: bool = False) -> None:
        self._request("DELETE", f"/system/logs/{quote(service)}", params={"all": str(all).lower()})

    # -- chains -----------------------------------------------------------------------
    def chains(self, jobs: Sequence[str]) -> dict[str, Any]:
        """Where the work these jobs belong to stands, down the whole chain: `busy`, the
        `stages` (each a service and its jobs' counts by status) and the `failed` jobs
        (POST /system/chains)."""
        return dict(self._request("POST", "/system/chains", json={"jobs": list(jobs)}).json())

    def wait(
        self,
        jobs: Sequence[str],
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the work these jobs belong to has ended, down the whole chain (the
        jobs an upload answered: every job their outputs start, and theirs...); returns
        chains() then. `on_progress` gets each answer on the way. TimeoutError after
        `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while True:
            found = self.chains(jobs)
            if on_progress is not None:
                on_progress(found)
            if not found["busy"]:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the work of {len(jobs)} job(s) was still going after {timeout:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, WAIT_PAUSE)

    # -- invocation -------------------------------------------------------------------
    def submit(self, service: str, data: bytes, filename: str = "event-file") -> str:
        """Start a job with `data` as its input file (POST /job); returns the job id."""
        response = self._request(
            "POST", f"/job/{quote(service)}", content=data, headers=_payload_headers(filename)
        )
        return str(response.json()["job_id"])

    def run(
        self, service: str, data: bytes, filename: str = "event-file", timeout: float | None = None
    ) -> RunOutput:
        """Run a job with `data` as its input file and wait for its output (POST /run)."""
        headers = {**_payload_headers(filename), "Accept": "application/octet-stream"}
        response = self._request(
            "POST", f"/run/{quote(service)}", content=data, headers=headers, timeout=timeout
        )
        disposition = response.headers.get("content-disposition", "")
        name = (
            disposition.split("filename=", 1)[-1].strip('"') if "filename=" in disposition else ""
        )
        return RunOutput(
            response.headers.get("x-job-id", ""),
            response.headers.get("x-ondrop-output", "file"),
            response.content,
            name,
        )


def _payload_headers(filename: str) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }


TAR_BLOCK = 512


def _tar(paths: Sequence[Path], progress: Progress | None) -> tuple[int, Iterator[bytes]]:
    """An uncompressed tar of `paths` (each by its name), as its length and its bytes,
    read as they are sent."""
    import tarfile

    entries = []
    for path in paths:
        info = tarfile.TarInfo(path.name)
        info.size = path.stat().st_size
        info.mode = 0o644
        info.mtime = int(time.time())
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        entries.append((header, path, info.size))
    length = sum(len(h) + n + (-n % TAR_BLOCK) for h, _, n in entries) + 2 * TAR_BLOCK

    def chunks() -> Iterator[bytes]:
        for header, path, size in entries:
            yield header
            left = size
            with path.open("rb") as f:
                while left and (chunk := f.read(min(1 << 20, left))):
                    left -= len(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk
            if left:
                raise ClientError(f"{path} got shorter while it was sent: send it again", 400)
            yield b"\0" * (-size % TAR_BLOCK)
        yield b"\0" * (2 * TAR_BLOCK)

    return length, chunks()


def _chunks(f: BinaryIO, progress: Progress | None) -> Iterator[bytes]:
    while chunk := f.read(1 << 20):
        if progress:
            progress(len(chunk))
        yield chunk


def _error(response: httpx.Response) -> ClientError:
    """The platform's error answer as the ClientError of its kind, with its message and
    the seconds its `Retry-After` asks to wait."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    error = ClientError.of(str(detail) or f"HTTP {response.status_code}", response.status_code)
    wait = response.headers.get("retry-after", "")
    if wait.isdigit():
        error.retry_after = int(wait)
    return error
