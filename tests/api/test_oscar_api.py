"""The rest of OSCAR's API on the embedded default: service JSON as oscar-cli marshals
it, OSCAR's fields in service items, /system/config, /system/status and /system/buckets
with presigned URLs.

The shapes are OSCAR's, from its source (github.com/grycap/oscar): pkg/types/service.go
(Service), pkg/types/status.go (StatusInfo), pkg/types/config.go (ConfigForUser),
pkg/handlers/config.go (PUT /system/config), pkg/utils/minio.go (MinIOBucket,
MinIOObject) and pkg/handlers/buckets/*.go (the bucket handlers and PresignResponse).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

from tests.api.test_api import COPY, create, wait_job

# A service as oscar-cli (Go) sends it: every empty map, list or string it has no value
# for is null, and the structs it does not use are their zero values.
GO_MARSHALLED: dict[str, Any] = {
    "name": "grey",
    "cluster_id": "ondrop",
    "memory": "256Mi",
    "cpu": "0.5",
    "total_memory": "",
    "total_cpu": "",
    "enable_gpu": False,
    "enable_sgx": False,
    "image_prefetch": False,
    "synchronous": {"min_scale": 0, "max_scale": 0},
    "log_level": "",
    "image": "",
    "alpine": False,
    "token": "",
    "file_stage_in": False,
    "input": [
        {"storage_provider": "minio.default", "path": "grey/in", "suffix": None, "prefix": None}
    ],
    "output": [
        {"storage_provider": "minio.default", "path": "grey/out", "suffix": None, "prefix": None}
    ],
    "script": COPY,
    "expose": {
        "min_scale": 0,
        "max_scale": 0,
        "cpu_threshold": 0,
        "rewrite_target": False,
        "default_command": False,
        "set_auth": False,
        "health_path": "",
    },
    "environment": {"variables": None, "secrets": None},
    "annotations": None,
    "vo": "",
    "labels": None,
    "owner": "",
    "interlink_node_name": "",
    "visibility": "",
    "allowed_users": None,
    "isolation_level": "",
    "bucket_list": None,
    "mount": {"storage_provider": "", "path": "", "suffix": None, "prefix": None},
}


def test_a_service_as_oscar_cli_sends_it_applies_without_warnings(api: httpx.Client) -> None:
    made = api.post("/system/services", json=GO_MARSHALLED)
    assert made.status_code == 201, made.text
    assert made.json()["warnings"] == []
    item = api.get("/system/services/grey").json()
    assert item["environment"] == {"variables": {}, "secrets": {}}
    assert item["input"][0]["suffix"] == []
    # OSCAR's fields are there, with OSCAR's meaning
    for field in ("cluster_id", "enable_gpu", "synchronous", "expose", "vo", "allowed_users"):
        assert field in item, field
    assert item["owner"] == "cluster_admin" and item["enable_gpu"] is False
    # what a client read, changed and sent back applies, and asks for nothing more
    item["environment"]["variables"] = {"MODE": "fast"}
    assert api.put("/system/services", json=item).status_code == 204
    assert api.get("/system/services/grey").json()["environment"]["variables"] == {"MODE": "fast"}


def test_a_null_variable_is_the_empty_string(api: httpx.Client) -> None:
    body = {**copy.deepcopy(GO_MARSHALLED), "environment": {"variables": {"EMPTY": None}}}
    assert api.post("/system/services", json=body).status_code == 201
    item = api.get("/system/services/grey").json()
    assert item["environment"]["variables"] == {"EMPTY": ""}


def test_gpu_from_enable_gpu_shows_as_enable_gpu(api: httpx.Client) -> None:
    create(api, "gpu", enable_gpu=True, gpu_optional=True, mode="batch")
    item = api.get("/system/services/gpu").json()
    assert item["gpu"] == 1 and item["enable_gpu"] is True


def test_a_provider_endpoint_without_a_scheme_or_blank_is_named_not_500(
    api: httpx.Client,
) -> None:
    for kind, config, field, words in [
        ("minio", {"endpoint": "minio-endpoint"}, "endpoint", "no http:// or https://"),
        ("minio", {"endpoint": ""}, "endpoint", "is blank"),
        ("minio", {"access_key": "k"}, "endpoint", "is blank or missing"),
        ("s3", {"endpoint": "s3.example.org"}, "endpoint", "no http:// or https://"),
        ("webdav", {"hostname": " "}, "hostname", "is blank"),
        ("onedata", {"oneprovider_host": ""}, "oneprovider_host", "is blank"),
    ]:
        body = {
            "name": "ep",
            "script": COPY,
            "input": [{"storage_provider": f"{kind}.x", "path": "b/in"}],
            "storage_providers": {kind: {"x": config}},
        }
        answer = api.post("/system/services", json=body)
        assert answer.status_code == 422, (kind, config, answer.text)
        assert f"{kind}.x.{field}" in answer.json()["detail"], answer.text
        assert words in answer.json()["detail"], answer.text
    assert api.get("/system/services").json() == []


# -- /system/config ------------------------------------------------------------------------
def test_allowed_image_repositories_are_read_changed_and_enforced(api: httpx.Client) -> None:
    assert api.get("/system/config").json()["allowed_image_repositories"] == []
    answer = api.put("/system/config", json={"allowed_image_repositories": ["ghcr.io/grycap/"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == ["ghcr.io/grycap/"]
    assert api.get("/system/config").json()["allowed_image_repositories"] == ["ghcr.io/grycap/"]
    refused = api.post(
        "/system/services", json={"name": "other", "image": "docker.io/library/alpine"}
    )
    assert refused.status_code == 422
    assert "not from an allowed repository" in refused.json()["detail"]
    assert "ghcr.io/grycap/" in refused.json()["detail"]
    create(api, "plain")  # a service with no image runs on the host: no image to check
    assert api.put("/system/config", json={"allowed_image_repositories": None}).json() == []


def test_a_wrong_config_is_refused_and_changes_nothing(api: httpx.Client) -> None:
    api.put("/system/config", json={"allowed_image_repositories": ["localhost/"]})
    body: Any
    for body in (
        [],
        {"allowed_image_repositories": "localhost/"},
        {"allowed_image_repositories": [""]},
        {"allowed_image_repositories": [3]},
    ):
        answer = api.put("/system/config", json=body)
        assert answer.status_code == 422, body
        assert "allowed_image_repositories" in answer.json()["detail"] or "expected" in answer.text
    assert api.get("/system/config").json()["allowed_image_repositories"] == ["localhost/"]


# -- /system/status --------------------------------------------------------------------------
def test_status_has_oscars_shape_beside_ondrops(api: httpx.Client) -> None:
    create(api, "copy")
    status = api.get("/system/status").json()
    cluster = status["cluster"]
    assert cluster["nodes_count"] == len(cluster["nodes"]) >= 1
    node = cluster["nodes"][0]
    assert node["cpu"]["capacity_cores"] >= 1 and node["memory"]["capacity_bytes"] > 0
    assert cluster["metrics"]["cpu"]["total_schedulable_cores"] >= 1
    assert set(cluster["metrics"]) == {"cpu", "memory", "gpu"}
    assert status["oscar"]["ready"] is True and status["oscar"]["deployment"]["replicas"] == 1
    assert status["oscar"]["oidc"]["enabled"] is False
    assert status["minio"]["buckets_count"] >= 1  # copy's folders
    assert "jobs" in status and "pools" in status  # ondrop's own


# -- /system/buckets ---------------------------------------------------------------------------
def test_a_bucket_is_made_listed_read_changed_and_deleted(api: httpx.Client) -> None:
    body = {"bucket_name": "notes", "visibility": "public", "allowed_users": []}
    made = api.post("/system/buckets", json=body)
    assert made.status_code == 201, made.text
    assert api.post("/system/buckets", json={"bucket_name": "notes"}).status_code == 409
    for i in range(3):
        assert api.put(f"/system/files/minio.default/notes/n{i}.txt", content=b"x").is_success
    listed = {b["bucket_name"]: b for b in api.get("/system/buckets").json()}
    assert listed["notes"]["visibility"] == "public"
    assert listed["notes"]["owner"] == "cluster_admin"
    whole = api.get("/system/buckets/notes").json()
    assert [o["object_name"] for o in whole["objects"]] == ["n0.txt", "n1.txt", "n2.txt"]
    assert whole["objects"][0]["size_bytes"] == 1 and whole["is_truncated"] is False
    assert whole["returned_items"] == 3
    changed = api.put(
        "/system/buckets",
        json={"bucket_name": "notes", "visibility": "restricted", "allowed_users": ["ana"]},
    )
    assert changed.status_code == 204
    assert api.get("/system/buckets/notes").json()["allowed_users"] == ["ana"]
    bad = api.put("/system/buckets", json={"bucket_name": "notes", "visibility": "secret"})
    assert bad.status_code == 422 and "visibility" in bad.json()["detail"]
    assert api.delete("/system/buckets/notes").status_code == 204
    assert "notes" not in {b["bucket_name"] for b in api.get("/system/buckets").json()}
    assert api.get("/system/buckets/notes").status_code == 404
    assert api.delete("/system/buckets/notes").status_code == 404


def test_a_services_bucket_is_kept(api: httpx.Client) -> None:
    create(api, "copy")
    listed = {b["bucket_name"]: b for b in api.get("/system/buckets").json()}
    assert listed["copy"]["metadata"]["service"] == "true"
    refused = api.delete("/system/buckets/copy")
    assert refused.status_code == 409 and "copy" in refused.json()["detail"]
    assert "copy" in {b["bucket_name"] for b in api.get("/system/buckets").json()}


def test_an_unsafe_bucket_name_is_refused(api: httpx.Client) -> None:
    for name in ("../up", "", "a//b"):
        answer = api.post("/system/buckets", json={"bucket_name": name})
        assert answer.status_code in (400, 422), (name, answer.text)
    assert api.post("/system/buckets", json={"name": "x"}).status_code == 422


def test_presigned_urls_download_and_upload_without_credentials(
    api: httpx.Client, anon: httpx.Client
) -> None:
    create(api, "copy")
    api.put("/system/files/minio.default/copy/in/a.txt", content=b"first")
    down = api.post(
        "/system/buckets/copy/presign", json={"object_key": "in/a.txt", "operation": "download"}
    ).json()
    assert down["method"] == "GET" and down["object_key"] == "in/a.txt"
    fetched = httpx.get(down["url"])
    assert fetched.status_code == 200 and fetched.content == b"first"
    up = api.post(
        "/system/buckets/copy/presign",
        json={"object_key": "in/b.txt", "operation": "upload", "expires": 60},
    ).json()
    assert up["method"] == "PUT"
    sent = httpx.put(up["url"], content=b"second")
    assert sent.status_code == 201, sent.text
    (job,) = sent.json()["jobs"]  # an upload like any other: it starts the job
    assert wait_job(api, "copy", job["job"])["status"] == "Succeeded"
    # the URL is good for what it was made for only
    assert httpx.put(down["url"], content=b"x").status_code == 403
    other = down["url"].replace("in/a.txt", "in/b.txt")
    assert httpx.get(other).status_code == 403
    expired = down["url"].replace("expires=", "expires=1")
    assert httpx.get(expired).status_code == 403


def test_a_wrong_presign_request_is_named(api: httpx.Client) -> None:
    create(api, "copy")
    for body, words in [
        ({"object_key": "x", "operation": "delete"}, "operation"),
        ({"object_key": "x", "operation": "download", "expires_in": 10**9}, "expires_in"),
        ({"operation": "download"}, "object_key"),
        ({"object_key": "../x", "operation": "download"}, "object_key"),
    ]:
        answer = api.post("/system/buckets/copy/presign", json=body)
        assert answer.status_code in (400, 422), (body, answer.text)
        assert words in answer.text, (body, answer.text)
    assert (
        api.post(
            "/system/buckets/nosuch/presign", json={"object_key": "x", "operation": "download"}
        ).status_code
        == 404
    )


def test_an_expired_presigned_url_is_refused(api: httpx.Client) -> None:
    create(api, "copy")
    api.put("/system/files/minio.default/copy/in/a.txt", content=b"first")
    down = api.post(
        "/system/buckets/copy/presign",
        json={"object_key": "in/a.txt", "operation": "download", "expires_in": 1},
    ).json()
    until = int(down["url"].split("expires=")[1].split("&")[0])
    while time.time() <= until:  # the condition: the moment it names has passed
        time.sleep(0.1)
    refused = httpx.get(down["url"])
    assert refused.status_code == 403 and "expired" in refused.text


# -- GET /system/logs --------------------------------------------------------------------------
def test_the_execution_log_has_every_invocation_and_who_made_it(
    api: httpx.Client, anon: httpx.Client
) -> None:
    token = create(api, "copy")["token"]
    assert anon.post("/job/copy", content=b"x", headers={"Authorization": f"Bearer {token}"})
    assert anon.post("/job/copy", content=b"x", headers={"Authorization": "Bearer wrong"})
    api.get("/system/services")  # not an invocation: not logged
    logs = api.get("/system/logs").json()["logs"]
    assert [(e["method"], e["path"], e["status"], e["user"]) for e in logs] == [
        ("POST", "/job/copy", 201, "service token"),
        ("POST", "/job/copy", 401, "service token"),
    ]
    assert logs[0]["raw"].startswith("[GIN-EXECUTIONS-LOGGER] ")
    assert logs[0]["client_ip"] == "127.0.0.1" and logs[0]["latency"].endswith("ms")
    assert token not in str(logs)


# -- deployment ----------------------------------------------------------------------------------
def test_a_services_deployment_is_its_jobs(api: httpx.Client) -> None:
    create(
        api,
        "noisy",
        script='for i in 1 2 3; do echo "line $i"; done; exit "$(cat "$INPUT_FILE_PATH")"',
    )
    assert api.get("/system/services/noisy/deployment/logs").json()["available"] is False
    ok = api.put("/system/files/minio.default/noisy/in/a", content=b"0").json()["jobs"][0]["job"]
    assert wait_job(api, "noisy", ok)["status"] == "Succeeded"
    assert api.get("/system/services/noisy/deployment").json()["state"] == "ready"
    bad = api.put("/system/files/minio.default/noisy/in/b", content=b"3").json()["jobs"][0]["job"]
    assert wait_job(api, "noisy", bad)["status"] == "Failed"
    summary = api.get("/system/services/noisy/deployment").json()
    assert summary["state"] == "degraded" and bad in summary["reason"]
    assert summary["affected_instances"] == 1 and summary["active_instances"] == 0
    logs = api.get("/system/services/noisy/deployment/logs?tailLines=2&timestamps=true").json()
    assert logs["available"] is True and bad in logs["message"]
    assert [e["message"] for e in logs["entries"]] == ["line 2", "line 3"]
    assert logs["entries"][0]["timestamp"].endswith("Z")
    assert api.get("/system/services/nosuch/deployment").status_code == 404
