"""A full disk: the data folder, or a local provider's folder, on a small tmpfs filled
to the brim. Uploads and invocation bodies answer 507 saying what is full, jobs that
meet it while staging wait (without using up their retries), /health says the platform
is degraded, and once space is freed every acknowledged job runs and /health is Ok."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ondrop.platform import Platform
from ondrop.pools import dispatch, policy
from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.fake import FakeRuntime, succeed
from ondrop.settings import Settings
from tests.conftest import ADMIN, listening_socket, serving
from tests.support.servers import unavailable
from tests.support.waiting import wait_for

MiB = 1 << 20


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` (root only), unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bfree * st.f_frsize


def fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s file system with one file, leaving about `leave` bytes free."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"x" * MiB
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, size - leave))
    finally:
        os.close(fd)
    assert free(folder) < MiB
    return filler


def settings_on(data: Path) -> Settings:
    return Settings.load(
        {
            "data": data,
            "admin_password": ADMIN.password,
            "concurrency": 1,
            "container_engine": "none",
            "gpus": "0",
        },
        environ={},
    )


class Gate:
    """Jobs of the service `hold` wait in their script until the gate opens, holding the
    platform's one slot; the others copy their input at once."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.opened = threading.Event()

    def __call__(self, spec: RunSpec) -> RunResult:
        if spec.service == "hold":
            self.holding.set()
            assert self.opened.wait(60)
        return succeed(spec)


@contextmanager
def running(
    settings: Settings, gate: Gate | None = None
) -> Iterator[tuple[Platform, httpx.Client]]:
    runtime = FakeRuntime(gate or succeed)
    platform = Platform(settings, runtimes={"process": runtime})
    platform.start()
    try:
        with (
            serving(platform, listening_socket()) as url,
            httpx.Client(base_url=url, auth=(ADMIN.user, ADMIN.password), timeout=60) as api,
        ):
            yield platform, api
    finally:
        if gate is not None:
            gate.opened.set()
        platform.stop()


def unavailable_attempts(platform: Platform, service: str) -> list[str]:
    return [
        a.reason
        for j in platform.store.jobs(service)
        for a in platform.store.attempts(j.id)
        if a.status == "unavailable"
    ]


def status_of(platform: Platform, job_id: str) -> str | None:
    job = platform.store.job(job_id)
    return job.status if job else None


def test_a_full_data_folder_answers_507_loses_nothing_and_jobs_resume_once_space_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "STORE_RETRY_CAP", 0.5)
    monkeypatch.setattr(policy, "STORE_RETRY_CAP", 0.5)
    with tmpfs(tmp_path / "data", "32m") as data:
        gate = Gate()
        with running(settings_on(data), gate) as (platform, api):
            answer = api.post(
                "/system/apply",
                json={
                    "services": [
                        {
                            "name": "hold",
                            "script": "true",
                            "input": [{"storage_provider": "local.default", "path": "hold"}],
                        },
                        {
                            "name": "copy",
                            "retries": 0,  # a full disk must not use up retries
                            "script": "true",
                            "input": [{"storage_provider": "local.default", "path": "in"}],
                            "output": [{"storage_provider": "local.default", "path": "out"}],
                        },
                    ]
                },
            )
            assert answer.status_code == 200, answer.text
            assert api.put("/system/files/local.default/hold/x", content=b"x").status_code == 201
            assert gate.holding.wait(30)  # the one slot is taken: the next jobs stay queued
            files = {f"f{i}.bin": bytes([i]) * MiB for i in range(4)}
            acknowledged = []
            for name, content in files.items():
                put = api.put(f"/system/files/local.default/in/{name}", content=content)
                assert put.status_code == 201, put.text
                acknowledged += [j["job"] for j in put.json()["jobs"]]
            assert len(acknowledged) == 4
            assert httpx.get(f"{api.base_url}/health").status_code == 200

            filler = fill(data, leave=256 * 1024)
            health = httpx.get(f"{api.base_url}/health")
            assert health.status_code == 503
            assert "data folder" in health.text and "full" in health.text
            refused = api.put("/system/files/local.default/in/late.bin", content=b"z" * MiB)
            assert refused.status_code == 507, refused.text
            assert "data folder" in refused.json()["detail"]
            assert "free space" in refused.json()["detail"]
            # Without a length, the body meets the full disk midway: still an answer.
            chunked = api.put(
                "/system/files/local.default/in/chunked.bin",
                content=iter([b"c" * (64 * 1024)] * 16),
            )
            assert chunked.status_code == 507, chunked.text
            assert "data folder" in chunked.json()["detail"]
            token = api.get("/system/services/copy").json()["token"]
            invoked = httpx.post(
                f"{api.base_url}/job/copy",
                content=b"z" * MiB,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert invoked.status_code == 507, invoked.text
            assert "data folder" in invoked.json()["detail"]
            status = api.get("/system/status").json()
            assert status["health"]["status"] == "degraded"
            assert any("data folder" in p for p in status["health"]["problems"])

            gate.opened.set()  # the queued jobs start, and meet the full disk staging in
            wait_for(lambda: len(unavailable_attempts(platform, "copy")) >= 3)
            assert httpx.get(f"{api.base_url}/health").status_code == 503
            assert platform.store.count_jobs("copy").get("failed", 0) == 0

            filler.unlink()
            wait_for(lambda: platform.store.count_jobs("copy") == {"succeeded": 4}, timeout=60)
            wait_for(lambda: httpx.get(f"{api.base_url}/health").status_code == 200)
            assert httpx.get(f"{api.base_url}/health").text == "Ok"
            assert api.get("/system/status").json()["health"] == {"status": "ok", "problems": []}
            reasons = unavailable_attempts(platform, "copy")
            assert all("staging in" in r and "no space" in r for r in reasons), reasons
            assert sorted(j.id for j in platform.store.jobs("copy")) == sorted(acknowledged)
            store = platform.providers.get("local.default")
            for name, content in files.items():
                with store.open(f"out/{name}") as f:
                    assert f.read() == content
            for refused_key in ("in/late.bin", "in/chunked.bin"):  # nothing kept, nothing started
                assert store.stat(refused_key) is None


def test_a_full_provider_folder_answers_507_naming_it_and_its_jobs_wait_for_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "STORE_RETRY_CAP", 0.5)
    monkeypatch.setattr(policy, "STORE_RETRY_CAP", 0.5)
    with (
        tmpfs(tmp_path / "archive", "8m") as archive,
        running(settings_on(tmp_path / "data")) as (
            platform,
            api,
        ),
    ):
        answer = api.post(
            "/system/apply",
            json={
                "services": [
                    {
                        "name": "keep",
                        "retries": 0,
                        "script": "true",
                        "input": [{"storage_provider": "local.default", "path": "in"}],
                        "output": [{"storage_provider": "local.archive", "path": "kept"}],
                        "storage_providers": {"local": {"archive": {"path": str(archive)}}},
                    }
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{api.base_url}/health").status_code == 200
        filler = fill(archive, leave=256 * 1024)
        refused = api.put("/system/files/local.archive/kept/direct.bin", content=b"d" * MiB)
        assert refused.status_code == 507, refused.text
        assert "local.archive" in refused.json()["detail"]
        health = httpx.get(f"{api.base_url}/health")
        assert health.status_code == 503 and "local.archive" in health.text

        put = api.put("/system/files/local.default/in/big.bin", content=b"b" * MiB)
        assert put.status_code == 201, put.text
        (job,) = [j["job"] for j in put.json()["jobs"]]
        wait_for(lambda: len(unavailable_attempts(platform, "keep")) >= 2)
        reasons = unavailable_attempts(platform, "keep")
        assert all("staging out" in r and "no space" in r for r in reasons), reasons
        assert status_of(platform, job) in ("queued", "running")  # waiting, not failed

        filler.unlink()
        wait_for(lambda: status_of(platform, job) == "succeeded", timeout=60)
        wait_for(lambda: httpx.get(f"{api.base_url}/health").status_code == 200)
        with platform.providers.get("local.archive").open("kept/big.bin") as f:
            assert f.read() == b"b" * MiB
        assert platform.providers.get("local.archive").stat("kept/direct.bin") is None
