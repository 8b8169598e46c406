"""The REST API against a real platform: OSCAR's shapes, credentials, files, /job and /run."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import stat
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from ondrop.chains import STATUSES
from ondrop.events.base import object_event
from ondrop.jobs import Cause
from ondrop.platform import Platform
from ondrop.settings import Settings
from ondrop.store.base import FAILED, SUCCEEDED, NewJob, Outcome
from tests.conftest import ADMIN, served
from tests.support.waiting import wait_for

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\necho "copied $(basename "$INPUT_FILE_PATH")"\n'


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        {
            "data": tmp_path / "data",
            "admin_password": ADMIN.password,
            "concurrency": 2,
            "max_upload": 4096,
            "container_engine": "none",
            "gpus": "0",
        },
        environ={},
    )


def create(api: httpx.Client, name: str = "copy", **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "script": COPY,
        "input": [{"storage_provider": "minio", "path": f"{name}/in"}],
        "output": [{"storage_provider": "minio", "path": f"{name}/out"}],
        **extra,
    }
    response = api.post("/system/services", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_job(api: httpx.Client, service: str, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = api.get(f"/system/logs/{service}").json()["jobs"].get(job)
        if found and found["status"] in {"Succeeded", "Failed"}:
            return dict(found)
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish")


# -- credentials -------------------------------------------------------------------------
def test_health_needs_no_credentials(anon: httpx.Client) -> None:
    response = anon.get("/health")
    assert (response.status_code, response.text) == (200, "Ok")


@pytest.mark.parametrize(
    ("auth", "said"),
    [
        (None, "admin credentials required (HTTP basic auth); none were given"),
        (("admin", "wrong"), "wrong password for the admin 'admin'"),
        (
            ("someone", ADMIN.password),
            "unknown user 'someone': the platform's admin has another name",
        ),
    ],
)
def test_system_endpoints_refuse_missing_or_wrong_credentials_with_401_saying_which(
    anon: httpx.Client, auth: tuple[str, str] | None, said: str
) -> None:
    for path in [
        "/system/info",
        "/system/config",
        "/system/services",
        "/system/logs/x",
        "/system/files/minio.default",
    ]:
        response = anon.get(path, auth=auth)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["detail"] == said


def test_malformed_basic_credentials_get_401_not_500(anon: httpx.Client) -> None:
    response = anon.get("/system/info", headers={"Authorization": "Basic !!!notbase64"})
    assert response.status_code == 401


def test_info_and_config_have_oscars_shape(api: httpx.Client) -> None:
    info = api.get("/system/info").json()
    assert {
        "version",
        "git_commit",
        "architecture",
        "kubernetes_version",
        "serverless_backend",
    } <= set(info)
    config = api.get("/system/config").json()
    assert {"endpoint", "verify", "access_key", "secret_key", "region"} <= set(
        config["minio_provider"]
    )
    assert config["config"]["name"] == "ondrop"
    assert config["config"]["gpu_available"] is False  # started with ONDROP_GPUS=0


# -- services ------------------------------------------------------------------------------
def test_service_crud_follows_oscar(api: httpx.Client) -> None:
    created = create(api, environment={"variables": {"A": "1"}, "secrets": {"S": "hidden-val"}})
    assert len(created["token"]) == 64
    shown = api.get("/system/services/copy").json()
    assert shown["environment"] == {"variables": {"A": "1"}, "secrets": {"S": ""}}
    assert [s["name"] for s in api.get("/system/services").json()] == ["copy"]
    again = api.post("/system/services", json={"name": "copy", "script": "true"})
    assert again.status_code == 409
    update = api.put("/system/services", json={**shown, "script": "echo changed"})
    assert (update.status_code, update.content) == (204, b"")
    after = api.get("/system/services/copy").json()
    assert after["token"] == created["token"] and after["script"] == "echo changed"
    assert api.delete("/system/services/copy").status_code == 204
    missing = api.get("/system/services/copy")
    assert missing.status_code == 404 and "no service named 'copy'" in missing.json()["detail"]


def test_an_invalid_service_gets_422_naming_the_field(api: httpx.Client) -> None:
    response = api.post(
        "/system/services", json={"name": "x", "script": "true", "memory": "lots", "colour": "red"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "service 'x': field 'colour': unknown field" in detail
    assert "field 'memory': expected a size" in detail


def test_apply_refuses_a_loop_and_changes_nothing(api: httpx.Client) -> None:
    a = {"name": "a", "script": "true", "input": [{"path": "x/1"}], "output": [{"path": "x/2"}]}
    b = {"name": "b", "script": "true", "input": [{"path": "x/2"}], "output": [{"path": "x/1"}]}
    response = api.post("/system/apply", json={"services": [a, b]})
    assert response.status_code == 409
    assert "a -> b -> a" in response.json()["detail"]
    assert api.get("/system/services").json() == []


def test_apply_refuses_an_unknown_provider(api: httpx.Client) -> None:
    bad = {"name": "a", "script": "true", "input": [{"storage_provider": "minio.far", "path": "x"}]}
    response = api.post("/system/apply", json={"services": [bad]})
    assert response.status_code == 422
    assert "storage provider 'minio.far' is not defined" in response.json()["detail"]


def test_an_image_without_a_container_engine_is_applied_with_a_warning_and_its_jobs_wait(
    api: httpx.Client,
) -> None:
    svc = {"name": "img", "image": "busybox", "script": "true", "input": [{"path": "img/in"}]}
    answer = api.post("/system/apply", json={"services": [svc]}).json()
    assert answer["created"] == ["img"]
    assert "no container engine" in answer["warnings"][0]
    assert answer["warnings"][0].endswith("its jobs wait until then")
    put = api.put("/system/files/minio.default/img/in/a.txt", content=b"x").json()
    job = put["jobs"][0]["job"]

    def waiting() -> dict[str, Any] | None:
        found = api.get("/system/logs/img").json()["jobs"][job]
        return found if "no container engine" in found.get("reason", "") else None

    found = wait_for(waiting)
    assert found["status"] == "Pending" and found["reason"].endswith("the job waits")


def test_with_the_pull_policy_never_an_image_that_cannot_be_had_is_refused(
    settings: Settings,
) -> None:
    with (
        served(settings, pull="never") as url,
        httpx.Client(base_url=url, auth=(ADMIN.user, ADMIN.password)) as admin,
    ):
        svc = {"name": "img", "image": "busybox", "script": "true"}
        refused = admin.post("/system/apply", json={"services": [svc]})
        assert refused.status_code == 422
        assert "no container engine" in refused.json()["detail"]
        assert admin.get("/system/services").json() == []


# -- files ---------------------------------------------------------------------------------
def test_an_upload_starts_one_job_whose_output_can_be_downloaded(
    api: httpx.Client, platform: Platform
) -> None:
    create(api)
    answer = api.put("/system/files/minio.default/copy/in/hello.txt", content=b"hello")
    assert answer.status_code == 201
    stored = platform.data / "storage" / "copy" / "in" / "hello.txt"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o666 & ~umask  # as any file written here
    assert list(platform.tmp.iterdir()) == []  # nothing of the body is left behind
    (started,) = answer.json()["jobs"]
    assert started["service"] == "copy"
    job = wait_job(api, "copy", started["job"])
    assert (job["status"], job["exit_code"], job["input"]) == ("Succeeded", 0, "copy/in/hello.txt")
    listing = api.get("/system/files/minio.default", params={"prefix": "copy/out"}).json()
    assert [o["key"] for o in listing["objects"]] == ["copy/out/hello.txt"]
    assert api.get("/system/files/minio.default/copy/out/hello.txt").content == b"hello"
    log = api.get(f"/system/logs/copy/{started['job']}")
    assert (log.text, log.headers["content-type"].split(";")[0]) == (
        "copied hello.txt\n",
        "text/plain",
    )


def test_chains_follow_an_upload_down_to_the_jobs_its_outputs_start(
    api: httpx.Client, anon: httpx.Client
) -> None:
    create(api)
    create(api, "again", input=[{"storage_provider": "minio", "path": "copy/out"}])
    answer = api.put("/system/files/minio.default/copy/in/a.txt", content=b"a")
    (started,) = answer.json()["jobs"]
    deadline = time.monotonic() + 20
    while (found := api.post("/system/chains", json={"jobs": [started["job"]]}).json())["busy"]:
        assert time.monotonic() < deadline, found
        time.sleep(0.02)
    # Both stages are there once it is not busy: an output's job is made before its
    # producer's end is recorded.
    assert found == {
        "busy": False,
        "stages": [
            {"service": "copy", "jobs": {**dict.fromkeys(STATUSES, 0), "succeeded": 1}},
            {"service": "again", "jobs": {**dict.fromkeys(STATUSES, 0), "succeeded": 1}},
        ],
        "failed": [],
    }
    assert api.get("/system/status", params={"service": "again"}).json()["upstream"] == ["copy"]
    missing = api.post("/system/chains", json={"jobs": [started["job"], "copy-nope"]})
    assert missing.status_code == 404 and "no such job: copy-nope" in missing.json()["detail"]
    for body in (b"\xff", b"{"):  # not UTF-8; not JSON: 422 saying so, as for apply
        for path in ("/system/chains", "/system/apply"):
            bad = api.post(path, content=body, headers={"Content-Type": "application/json"})
            assert bad.status_code == 422 and bad.json()["detail"].startswith(
                "the body is not JSON ("
            ), path
    empty = api.post("/system/chains", json={"jobs": []})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("jobs:")
    assert anon.post("/system/chains", json={"jobs": [started["job"]]}).status_code == 401


def _tar(*entries: tuple[str, bytes | None, bytes]) -> bytes:
    """A tar of (name, link target or None, content) entries; a name ending in / is a
    folder."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, target, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = target.decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        end = tar.offset
    return out.getvalue()[:end] + bytes(1024)  # without the padding to 10 KiB


def test_many_files_in_one_tar_are_stored_and_their_jobs_recorded_together(
    api: httpx.Client, platform: Platform
) -> None:
    create(api)
    body = _tar(("./a.txt", None, b"a"), ("sub/", None, b""), ("sub/b.txt", None, b"bb"))
    answer = api.post(
        "/system/files/minio.default",
        params={"prefix": "copy/in"},
        content=body,
        headers={"Content-Type": "application/x-tar"},
    )
    assert answer.status_code == 201, answer.text
    objects = answer.json()["objects"]
    assert [(o["key"], o["size"]) for o in objects] == [
        ("copy/in/a.txt", 1),
        ("copy/in/sub/b.txt", 2),
    ]
    for found in objects:
        (job,) = found["jobs"]
        assert wait_job(api, "copy", job["job"])["status"] == "Succeeded"
    first = api.get("/system/files/minio.default", params={"prefix": "copy/in", "limit": 1})
    assert [o["key"] for o in first.json()["objects"]] == ["copy/in/a.txt"]
    assert first.json()["truncated"] is True
    whole = api.get("/system/files/minio.default", params={"prefix": "copy/in", "limit": 2})
    assert len(whole.json()["objects"]) == 2 and whole.json()["truncated"] is False
    assert api.get("/system/files/minio.default", params={"limit": 0}).status_code == 422
    elsewhere = api.post(
        "/system/files/minio.default", params={"prefix": "nowhere"}, content=_tar(("c", None, b"c"))
    ).json()["objects"]
    assert elsewhere[0]["jobs"] == [] and "no service takes input" in elsewhere[0]["no_job"]


@pytest.mark.parametrize(
    ("entries", "said"),
    [
        (
            (("ok.txt", None, b"x"), ("link", b"/etc/passwd", b"")),
            "member 'link' of the archive is a link",
        ),
        ((("ok.txt", None, b"x"), ("../up.txt", None, b"x")), "'..'"),
        ((("ok.txt", None, b"x"), ("ok.txt", None, b"y")), "is in the archive twice"),
        ((("only/", None, b""),), "holds no file"),
    ],
)
def test_a_tar_with_a_link_a_climbing_name_or_a_twin_stores_nothing(
    api: httpx.Client,
    platform: Platform,
    entries: tuple[tuple[str, bytes | None, bytes], ...],
    said: str,
) -> None:
    create(api)
    answer = api.post(
        "/system/files/minio.default", params={"prefix": "copy/in"}, content=_tar(*entries)
    )
    assert answer.status_code == 400 and said in answer.json()["detail"], answer.text
    assert (
        api.get("/system/files/minio.default", params={"prefix": "copy/in"}).json()["objects"] == []
    )
    assert api.get("/system/logs/copy").json()["jobs"] == {}
    not_tar = api.post(
        "/system/files/minio.default", params={"prefix": "copy/in"}, content=b"x" * 600
    )
    assert not_tar.status_code == 400 and "not a tar archive" in not_tar.json()["detail"]


def test_a_tar_member_that_is_a_fifo_or_claims_more_than_was_sent_stores_nothing(
    api: httpx.Client,
) -> None:
    create(api)
    fifo = io.BytesIO()
    with tarfile.open(fileobj=fifo, mode="w") as tar:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
        end = tar.offset
    answer = api.post(
        "/system/files/minio.default",
        params={"prefix": "copy/in"},
        content=fifo.getvalue()[:end] + bytes(1024),
    )
    assert (
        answer.status_code == 400
        and "'pipe' of the archive is not a regular file" in (answer.json()["detail"])
    )
    header = tarfile.TarInfo("big.txt")
    header.size = 1 << 30  # a gigabyte claimed, a few bytes sent
    body = header.tobuf(format=tarfile.PAX_FORMAT) + b"tiny" + bytes(2048)
    answer = api.post("/system/files/minio.default", params={"prefix": "copy/in"}, content=body)
    assert answer.status_code == 400, answer.text
    assert (
        api.get("/system/files/minio.default", params={"prefix": "copy/in"}).json()["objects"] == []
    )


def test_an_object_version_seen_again_starts_no_second_job(
    api: httpx.Client, platform: Any
) -> None:
    create(api)
    first = api.put("/system/files/minio.default/copy/in/a.txt", content=b"1").json()
    (job,) = first["jobs"]
    wait_job(api, "copy", job["job"])
    storage = platform.providers.get("minio.default")
    info = storage.stat("copy/in/a.txt")
    again = platform.intake.object_stored("minio.default", info)  # the watcher, late
    assert [j.id for j in again] == [job["job"]]
    assert platform.store.count_jobs("copy") == {"succeeded": 1}
    second = api.put("/system/files/minio.default/copy/in/a.txt", content=b"22").json()
    assert second["jobs"][0]["job"] != job["job"]  # a new version is new work


@pytest.mark.parametrize("key", ["a/%2e%2e/%2e%2e/etc/passwd", "a/%00b", "%2Fetc/passwd", "a//b"])
def test_unsafe_object_keys_are_refused_with_400(api: httpx.Client, key: str) -> None:
    response = api.put(f"/system/files/minio.default/{key}", content=b"x")
    assert response.status_code == 400, response.text
    assert "key" in response.json()["detail"]


def test_an_upload_over_the_limit_gets_413_and_leaves_nothing(
    api: httpx.Client, platform: Any
) -> None:
    response = api.put("/system/files/minio.default/big.bin", content=b"x" * 5000)
    assert response.status_code == 413
    assert "over the limit of 4Ki" in response.json()["detail"]

    def stream() -> Any:  # no Content-Length: cut off while streaming
        for _ in range(10):
            yield b"y" * 1000

    response = api.put("/system/files/minio.default/big2.bin", content=stream())
    assert response.status_code == 413
    assert list(platform.providers.get("local.default").list()) == []
    assert list(platform.tmp.iterdir()) == []


def test_an_unknown_provider_gets_404(api: httpx.Client) -> None:
    response = api.get("/system/files/s3.nowhere")
    assert response.status_code == 404
    assert "storage provider 's3.nowhere' is not defined" in response.json()["detail"]


# -- /job and /run -------------------------------------------------------------------------
def test_job_needs_the_services_own_token(api: httpx.Client, anon: httpx.Client) -> None:
    token = create(api)["token"]
    other = create(api, "other")["token"]
    assert anon.post("/job/copy", content=b"x").status_code == 401
    bearer = anon.post("/job/copy", content=b"x", headers={"Authorization": f"Bearer {other}"})
    assert bearer.status_code == 401
    assert "does not grant access" in bearer.json()["detail"]
    # The admin's credentials, wrong: the answer says which part, as on /system/*.
    wrong = anon.post("/run/copy", content=b"x", auth=(ADMIN.user, "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == f"wrong password for the admin {ADMIN.user!r}"
    assert "token is required" in anon.post("/job/copy", content=b"x").json()["detail"]
    ok = anon.post("/job/copy", content=b"eA==", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 201
    assert ok.json()["job_id"].startswith("copy-")
    assert (
        anon.post("/job/nothing", content=b"x", auth=(ADMIN.user, ADMIN.password)).status_code
        == 404
    )


def test_job_takes_a_base64_payload_as_the_input_file(api: httpx.Client) -> None:
    create(api)
    body = base64.b64encode(b"\x00\x01binary")
    job_id = api.post(
        "/job/copy", content=body, headers={"Content-Disposition": 'attachment; filename="in.bin"'}
    ).json()["job_id"]
    assert wait_job(api, "copy", job_id)["status"] == "Succeeded"
    assert api.get("/system/files/minio.default/copy/out/in.bin").content == b"\x00\x01binary"


def test_job_with_a_minio_event_runs_on_the_stored_object(api: httpx.Client) -> None:
    create(api, "ev", input=[])
    api.put("/system/files/minio.default/bucket/photo.png", content=b"png")
    event = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "bucket/photo.png",
        "Records": [
            {
                "eventSource": "minio:s3",
                "s3": {"bucket": {"name": "bucket"}, "object": {"key": "photo.png"}},
            }
        ],
    }
    first = api.post("/job/ev", json=event).json()["job_id"]
    again = api.post("/job/ev", json=event).json()["job_id"]
    assert first == again  # the same object version is one job
    assert wait_job(api, "ev", first)["input"] == "bucket/photo.png"
    assert api.get("/system/files/minio.default/ev/out/photo.png").content == b"png"


def test_run_answers_with_the_single_output_in_base64_as_oscar(
    api: httpx.Client, anon: httpx.Client
) -> None:
    token = create(api)["token"]
    response = anon.post(
        "/run/copy",
        content=base64.b64encode(b"sync data"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.content) == b"sync data"
    assert response.headers["x-ondrop-output"] == "file"
    job = api.get(f"/system/jobs/copy/{response.headers['x-job-id']}").json()
    assert job["status"] == "Succeeded" and job["attempt_list"][0]["exit_code"] == 0
    assert job["origin"] == {"provider": "http", "key": "event-file"}  # the invocation itself


def test_a_job_and_each_of_its_attempts_name_their_node_and_cause(
    api: httpx.Client, platform: Platform
) -> None:
    create(api)
    here = api.post("/job/copy", content=b"{}").json()["job_id"]
    assert wait_job(api, "copy", here)["node"] == socket.gethostname()  # the local backend
    # A job of a pool no worker of this platform claims: the test plays its backend.
    event = object_event("minio.default", "copy/in/far", "1", 3)
    (far,) = platform.store.add_event(event, [NewJob("far", "copy", pool="cluster")])
    (claim,) = platform.store.claim(1, {}, time.time(), pool="cluster")
    assert platform.store.set_handle(far.id, claim.attempt, "task-1", "node-a")
    failed = Outcome(FAILED, 1, "exit status 1", "boom", Cause.EXIT)  # names no node
    platform.store.finish(far.id, claim.attempt, failed, time.time())
    (again,) = platform.store.claim(1, {}, time.time(), pool="cluster")
    platform.store.finish(far.id, again.attempt, Outcome(SUCCEEDED, 0, node="node-b"), None)
    listed = api.get("/system/logs/copy").json()["jobs"]
    assert (listed["far"]["node"], listed[here]["node"]) == ("node-b", socket.gethostname())
    detail = api.get("/system/jobs/copy/far").json()
    assert (detail["status"], detail["node"]) == ("Succeeded", "node-b")
    attempts = [(a["number"], a["node"], a["cause"]) for a in detail["attempt_list"]]
    assert attempts == [(1, "node-a", "exit"), (2, "node-b", None)]
    (local,) = api.get(f"/system/jobs/copy/{here}").json()["attempt_list"]
    assert (local["node"], local["cause"]) == (socket.gethostname(), None)


def test_run_gives_raw_bytes_to_clients_that_accept_them(api: httpx.Client) -> None:
    create(api)
    response = api.post(
        "/run/copy",
        content=b"\xff\xfe raw",
        headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
    )
    assert response.content == b"\xff\xfe raw"


def test_run_zips_several_outputs_and_gives_the_log_when_there_are_none(
    api: httpx.Client,
) -> None:
    create(api, "many", script='cd "$TMP_OUTPUT_DIR"; echo 1 > a; mkdir d; echo 2 > d/b', output=[])
    zipped = api.post("/run/many", content=b"{}", headers={"Accept": "application/octet-stream"})
    assert zipped.headers["x-ondrop-output"] == "zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert sorted(archive.namelist()) == ["a", "d/b"]
        assert archive.read("d/b") == b"2\n"
    create(api, "say", script='echo "hello from $(cat "$INPUT_FILE_PATH")"', output=[])
    said = api.post("/run/say", content=json.dumps({"who": "you"}))
    assert said.headers["x-ondrop-output"] == "log"
    assert said.text == 'hello from {"who": "you"}\n'


def test_run_of_a_failing_script_is_an_error_with_the_reason(api: httpx.Client) -> None:
    create(api, "fail", script="echo oops; exit 7")
    response = api.post("/run/fail", content=b"{}")
    assert response.status_code == 500
    assert "failed: exit status 7" in response.json()["detail"]


# -- jobs and logs ---------------------------------------------------------------------------
def test_the_job_list_has_oscars_shape_and_pages(api: httpx.Client) -> None:
    create(api)
    ids = [api.post("/job/copy", content=b"{}").json()["job_id"] for _ in range(3)]
    for job_id in ids:
        wait_job(api, "copy", job_id)
    page = api.get("/system/logs/copy", params={"limit": 2}).json()
    assert list(page["jobs"]) == ids[::-1][:2]
    assert (page["next_page"], page["remaining_jobs"]) == ("2", 1)
    rest = api.get("/system/logs/copy", params={"limit": 2, "page": page["next_page"]}).json()
    assert list(rest["jobs"]) == [ids[0]] and "next_page" not in rest
    job = rest["jobs"][ids[0]]
    assert job["status"] == "Succeeded"
    assert job["creation_time"].endswith("Z") and job["finish_time"].endswith("Z")


def test_the_job_list_keeps_a_status_named_in_any_case_and_refuses_an_unknown_one(
    api: httpx.Client,
) -> None:
    create(api)
    create(api, "fail", script="exit 1")
    bad = api.post("/job/fail", content=b"{}").json()["job_id"]
    wait_job(api, "fail", bad)
    for asked in ("Failed", "failed", "FAILED", "failed "):
        listed = api.get("/system/logs/fail", params={"status": asked}).json()["jobs"]
        assert list(listed) == [bad]
    assert api.get("/system/logs/fail", params={"status": "succeeded"}).json()["jobs"] == {}
    response = api.get("/system/logs/fail", params={"status": "bogus"})
    assert response.status_code == 422
    assert "status 'bogus' is not a job status" in response.json()["detail"]
    assert "Cancelled" in response.json()["detail"]


def test_delete_logs_removes_succeeded_jobs_unless_all(api: httpx.Client) -> None:
    create(api)
    create(api, "fail", script="exit 1")
    ok = api.post("/job/copy", content=b"{}").json()["job_id"]
    bad = api.post("/job/fail", content=b"{}").json()["job_id"]
    wait_job(api, "copy", ok)
    wait_job(api, "fail", bad)
    assert api.delete("/system/logs/copy").status_code == 204
    assert api.get("/system/logs/copy").json()["jobs"] == {}
    api.delete("/system/logs/fail")
    assert list(api.get("/system/logs/fail").json()["jobs"]) == [bad]
    api.delete("/system/logs/fail", params={"all": "true"})
    assert api.get("/system/logs/fail").json()["jobs"] == {}
    assert api.get(f"/system/logs/fail/{bad}").status_code == 404


def test_the_openapi_document_and_docs_are_served(anon: httpx.Client) -> None:
    paths = anon.get("/openapi.json").json()["paths"]
    for path in [
        "/system/services",
        "/system/logs/{service}",
        "/job/{service}",
        "/run/{service}",
        "/system/files/{provider}/{key}",
    ]:
        assert path in paths
    assert anon.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
        ("/redoc", ["redoc.standalone.js", "favicon.png"]),
    ],
)
def test_the_docs_pages_work_offline_with_assets_ondrop_serves(
    anon: httpx.Client, page: str, assets: list[str]
) -> None:
    html = anon.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    # Nothing is fetched from anywhere but this platform: no CDN, no web fonts.
    assert "http://" not in html.text and "https://" not in html.text, html.text
    for name in assets:
        assert f'"/docs/assets/{name}"' in html.text
        asset = anon.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and len(asset.content) > 1000, name
    assert anon.get("/docs/assets/../openapi.json").status_code == 404


def test_a_token_starts_jobs_only_on_its_services_inputs(
    api: httpx.Client, anon: httpx.Client
) -> None:
    token = create(api)["token"]
    api.put("/system/files/minio.default/private/secret.txt", content=b"secret")
    api.put("/system/files/minio.default/copy/in/mine.txt", content=b"mine")

    def event(bucket: str, key: str) -> dict[str, Any]:
        return {"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}

    bearer = {"Authorization": f"Bearer {token}"}
    refused = anon.post("/job/copy", json=event("private", "secret.txt"), headers=bearer)
    assert refused.status_code == 403
    assert "not in an input path of 'copy'" in refused.json()["detail"]
    assert (
        anon.post("/job/copy", json=event("copy", "in/mine.txt"), headers=bearer).status_code == 201
    )
    assert api.post("/job/copy", json=event("private", "secret.txt")).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"Records": [{"s3": "x"}]},
        {"Records": [{"eventSource": "aws:s3"}]},
        {"Records": [{"s3": {"bucket": {"name": 1}, "object": {"key": "k"}}}]},
    ],
)
def test_a_malformed_storage_event_is_a_400(api: httpx.Client, body: dict[str, Any]) -> None:
    create(api)
    response = api.post("/job/copy", json=body)
    assert response.status_code == 400, response.text


def test_raw_invocations_still_get_an_event_describing_them(api: httpx.Client) -> None:
    create(api, "ev", script='echo "$EVENT"', output=[])
    response = api.post(
        "/run/ev",
        content=b"\x00\x01",
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": 'attachment; filename="blob.bin"',
        },
    )
    assert json.loads(response.text) == {"event": "invocation", "file": "blob.bin", "size": 2}


def test_an_absurd_page_is_the_first_page(api: httpx.Client) -> None:
    create(api)
    response = api.get("/system/logs/copy", params={"page": "9" * 40})
    assert response.status_code == 200 and response.json()["jobs"] == {}


def test_a_run_whose_job_is_deleted_while_queued_gets_404(api: httpx.Client, platform: Any) -> None:
    import threading

    create(api, "slow", script="sleep 2", max_concurrency=1)
    blockers = [api.post("/job/slow", content=b"{}").json()["job_id"] for _ in range(2)]
    answer: dict[str, Any] = {}

    def run() -> None:
        with httpx.Client(base_url=str(api.base_url), auth=api.auth, timeout=30) as c:
            answer["response"] = c.post("/run/slow", content=b"{}")

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    queued: list[str] = []
    while not queued and time.monotonic() < deadline:
        jobs = api.get("/system/logs/slow", params={"status": "Pending"}).json()["jobs"]
        queued = [j for j in jobs if j not in blockers]
        time.sleep(0.05)
    assert queued, "the /run job never showed up"
    assert api.delete(f"/system/logs/slow/{queued[0]}").status_code == 204
    thread.join(10)
    assert answer["response"].status_code == 404
    assert "was deleted" in answer["response"].json()["detail"]


def test_payloads_are_kept_as_files_until_their_job_succeeded(
    api: httpx.Client, platform: Any
) -> None:
    create(api)
    create(api, "fail", script="exit 1")
    ok = api.post("/job/copy", content=b"{}").json()["job_id"]
    bad = api.post("/job/fail", content=b"{}").json()["job_id"]
    wait_job(api, "copy", ok)
    wait_job(api, "fail", bad)
    kept = list(platform.payloads.folder.iterdir())
    assert len(kept) == 1  # the failed job's body, for a re-run
    assert kept[0].name in platform.store.payloads_in_use()


def test_large_and_line_wrapped_base64_bodies_are_decoded(tmp_path: Path) -> None:
    from ondrop.api.routes.invoke import decode_body

    data = bytes(range(256)) * 8192  # 2 MiB: past the size read whole
    encoded = base64.encodebytes(data)  # 76-column lines, as the base64 tool writes
    body = tmp_path / "body"
    body.write_bytes(encoded)
    content, _ = decode_body(body, "text/plain")
    assert content.read_bytes() == data and not body.exists()
    small = tmp_path / "small"
    small.write_bytes(base64.encodebytes(b"hello"))
    assert decode_body(small, "")[0].read_bytes() == b"hello"
    text = tmp_path / "text"
    text.write_bytes(b"just words, not base64")
    assert decode_body(text, "")[0].read_bytes() == b"just words, not base64"
    big_json = tmp_path / "json"
    big_json.write_bytes(b'  {"a": "' + b"x" * (2 << 20) + b'"}')
    assert decode_body(big_json, "")[0] == big_json


def test_run_never_returns_a_file_a_link_in_the_outputs_points_to(api: httpx.Client) -> None:
    create(
        api,
        "leaky",
        output=[],
        script='ln -s /etc/hostname "$TMP_OUTPUT_DIR/leak"\n'
        'mkdir "$TMP_OUTPUT_DIR/d" && ln -s /etc/hostname "$TMP_OUTPUT_DIR/d/leak2"\n'
        'echo fine > "$TMP_OUTPUT_DIR/ok.txt"',
    )
    response = api.post("/run/leaky", content=b"{}", headers={"Accept": "application/octet-stream"})
    assert response.headers["x-ondrop-output"] == "file"
    assert response.content == b"fine\n"
