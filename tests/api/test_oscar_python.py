"""OSCAR's own Python client (oscar-python 2.2, from PyPI) against ondrop's API: every
method of it that ondrop implements, as an OSCAR user's scripts call them (its OIDC
path is in test_oidc.py, its storage client on a real S3 store in test_stores.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from oscar_python import client as client_module

from tests.api.test_api import wait_job
from tests.conftest import ADMIN

FDL = """
functions:
  oscar:
  - ondrop:
      name: shout
      cpu: 0.5
      memory: 256Mi
      script: shout.sh
      input:
      - storage_provider: minio.default
        path: shout/in
      output:
      - storage_provider: minio.default
        path: shout/out
"""
SCRIPT = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'


@pytest.fixture
def oscar(base_url: str) -> Any:
    return client_module.Client(
        {
            "cluster_id": "ondrop",
            "endpoint": base_url,
            "user": ADMIN.user,
            "password": ADMIN.password,
            "ssl": False,
        }
    )


@pytest.fixture
def fdl(tmp_path: Path) -> Path:
    (tmp_path / "shout.sh").write_text(SCRIPT)
    path = tmp_path / "shout.yaml"
    path.write_text(FDL)
    return path


def test_cluster_info_config_status_and_health(oscar: Any) -> None:
    assert oscar.health_check().text == "Ok"
    info = oscar.get_cluster_info().json()
    assert info["version"] and "serverless_backend" in info
    config = oscar.get_cluster_config().json()
    assert "minio_provider" in config and config["allowed_image_repositories"] == []
    status = oscar.get_cluster_status().json()
    assert status["cluster"]["nodes_count"] >= 1


def test_services_from_an_fdl_file_through_their_life(oscar: Any, fdl: Path) -> None:
    assert oscar.create_service(str(fdl)).status_code == 201
    with pytest.raises(ValueError, match="already present"):
        oscar.create_service(str(fdl))
    (listed,) = oscar.list_services().json()
    assert listed["name"] == "shout" and listed["cpu"] == "0.5"
    fdl.write_text(FDL.replace("256Mi", "512Mi"))
    assert oscar.update_service("shout", str(fdl)).status_code == 204
    assert oscar.get_service("shout").json()["memory"] == "512Mi"
    assert oscar.remove_service("shout").status_code == 204
    assert oscar.list_services().json() == []
    with pytest.raises(requests.HTTPError):
        oscar.get_service("shout")


def test_a_service_from_a_dict_runs_sync_and_async_and_its_jobs_are_listed(
    oscar: Any, api: httpx.Client
) -> None:
    service = {
        "name": "shout",
        "script": SCRIPT,
        "input": [{"storage_provider": "minio.default", "path": "shout/in"}],
        "output": [{"storage_provider": "minio.default", "path": "shout/out"}],
    }
    assert oscar.create_service(service).status_code == 201
    answer = oscar.run_service("shout", input="hello")
    assert answer.status_code == 200
    assert base64.b64decode(answer.text) == b"HELLO"
    started = oscar.run_service("shout", input="again", async_call=True)
    assert started.status_code == 201
    job = started.json()["job_id"]
    assert wait_job(api, "shout", job)["status"] == "Succeeded"
    jobs = oscar.list_jobs("shout").json()["jobs"]
    assert job in jobs and len(jobs) == 2
    assert isinstance(oscar.get_job_logs("shout", job).text, str)
    totals = oscar.get_metrics_summary().json()["totals"]
    assert (totals["requests_count_sync"], totals["requests_count_async"]) == (1, 1)
    (item,) = oscar.get_metrics_breakdown().json()["items"]
    assert (item["key"], item["requests_count_total"]) == ("shout", 2)
    own = oscar.get_service_metrics("shout").json()
    assert own["service_name"] == "shout" and len(own["metrics"]) == 6
    assert oscar.remove_job("shout", job).status_code == 204
    assert job not in oscar.list_jobs("shout").json()["jobs"]
    assert oscar.get_deployment_status("shout").json()["state"] == "ready"
    assert oscar.get_deployment_logs("shout").json()["available"] is True
    executions = oscar.get_system_logs(timestamps=True).json()["logs"]
    assert [e["path"] for e in executions] == ["/run/shout", "/job/shout"]
    assert oscar.remove_all_jobs("shout").status_code in (200, 204)
    assert oscar.list_jobs("shout").json()["jobs"] == {}


def test_buckets_and_presigned_urls(oscar: Any, api: httpx.Client) -> None:
    assert oscar.create_bucket("results", visibility="public").status_code == 201
    assert "results" in {b["bucket_name"] for b in oscar.list_buckets().json()}
    api.put("/system/files/minio.default/results/r.txt", content=b"42")
    got = oscar.get_bucket("results").json()
    assert [o["object_name"] for o in got["objects"]] == ["r.txt"]
    assert oscar.update_bucket("results", "restricted", ["ana"]).status_code == 204
    assert oscar.get_bucket("results").json()["visibility"] == "restricted"
    url = oscar.presign_bucket("results", "r.txt", expires=60).json()["url"]
    assert requests.get(url, timeout=10).content == b"42"
    assert oscar.delete_bucket("results").status_code == 204
    assert "results" not in {b["bucket_name"] for b in oscar.list_buckets().json()}


def test_quotas_of_users(oscar: Any) -> None:
    assert oscar.update_user_quota("ana", "1500m", "2Gi").status_code == 200
    resources = oscar.get_user_quota("ana").json()["resources"]
    assert (resources["cpu"]["max"], resources["memory"]["max"]) == (1500, 2 * 1024**3)
    own = oscar.get_own_quota().json()  # the admin's: no limits
    assert own["user_id"] == "cluster_admin" and own["resources"]["cpu"]["max"] == -1


def test_an_error_reaches_the_client_as_the_status_oscar_gives(oscar: Any) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        oscar.run_service("nosuch", input="x", token="t")
    assert caught.value.response is not None
    assert caught.value.response.status_code == 404
    body = json.dumps({"bucket_name": "x", "visibility": "secret"})
    answer = requests.post(
        oscar.endpoint + "/system/buckets",
        data=body,
        auth=(ADMIN.user, ADMIN.password),
        timeout=10,
    )
    assert answer.status_code == 422 and "visibility" in answer.json()["detail"]
