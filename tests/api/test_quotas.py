"""Quotas per user (OSCAR's /system/quotas/user): set by the admin, read by each user for
themselves, and held by the claim: a user's jobs over their quota wait queued while
other users' start. OSCAR's shape (pkg/types/quotas.go QuotaResponse): cpu in millicores,
memory in bytes, each resource's `max` and `used`; ondrop adds `jobs`."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ondrop.errors import DefinitionError
from ondrop.quotas import Limits
from ondrop.settings import Settings
from tests.api.test_oidc import as_user, issuer, service, settings
from tests.support.issuer import Issuer

__all__ = ["issuer", "settings"]  # the OIDC tests' fixtures: a loopback issuer


def status(client: httpx.Client, name: str, job: str) -> str:
    found = client.get(f"/system/logs/{name}").json()["jobs"].get(job)
    return str(found["status"]) if found else ""


def wait_status(client: httpx.Client, name: str, job: str, wanted: str) -> None:
    deadline = time.monotonic() + 60
    while status(client, name, job) != wanted:
        assert time.monotonic() < deadline, f"job {job} never became {wanted}"
        time.sleep(0.05)


def start(client: httpx.Client, name: str) -> str:
    answer = client.post(f"/job/{name}", content=b"x")
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job_id"])


def test_a_users_jobs_wait_for_room_in_their_quota_while_others_run(
    base_url: str, issuer: Issuer, api: httpx.Client
) -> None:
    with (
        as_user(base_url, issuer.token("ana")) as ana,
        as_user(base_url, issuer.token("bob")) as bob,
    ):
        set_to = api.put("/system/quotas/user/ana", json={"cpu": "2", "jobs": 1})
        assert set_to.status_code == 200, set_to.text
        assert set_to.json()["resources"]["jobs"] == {"max": 1, "used": 0}
        assert ana.post("/system/services", json=service("slow", script="sleep 60")).is_success
        assert bob.post("/system/services", json=service("quick", script="true")).is_success
        first = start(ana, "slow")
        wait_status(ana, "slow", first, "Running")
        second = start(ana, "slow")
        theirs = start(bob, "quick")  # queued after ana's second, and bob has no quota
        wait_status(bob, "quick", theirs, "Succeeded")
        assert status(ana, "slow", second) == "Pending"  # passed over: ana's quota is full
        own = ana.get("/system/quotas/user").json()
        assert own["user_id"] == "ana"
        # `slow` declares no cpu: its job counts as ana's whole cpu quota.
        assert own["resources"]["cpu"] == {"max": 2000, "used": 2000}
        assert own["resources"]["jobs"] == {"max": 1, "used": 1}
        assert own["resources"]["memory"]["max"] == -1  # no limit
        assert api.post(f"/system/jobs/slow/{first}/cancel").is_success
        wait_status(ana, "slow", second, "Running")  # room again
        assert api.post(f"/system/jobs/slow/{second}/cancel").is_success
        # Only the admin reads or sets another's quota.
        assert bob.get("/system/quotas/user/ana").status_code == 401
        assert bob.put("/system/quotas/user/bob", json={"jobs": 100}).status_code == 401
        assert bob.get("/system/quotas/user").json()["resources"]["jobs"]["max"] == -1


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({}, 400, "cpu, memory, gpu or jobs must be given"),
        ({"ephemeral_storage": "1Gi"}, 400, "does not limit disk"),
        ({"cpu": "lots"}, 422, "quota cpu: 'lots'"),
        ({"jobs": -1}, 422, "quota jobs"),
        ({"disk": "1"}, 400, "unknown quota fields: disk"),
    ],
)
def test_a_wrong_quota_is_refused_and_changes_nothing(
    api: httpx.Client, body: dict[str, Any], code: int, says: str
) -> None:
    answer = api.put("/system/quotas/user/ana", json=body)
    assert answer.status_code == code and says in answer.json()["detail"]
    assert api.get("/system/quotas/user/ana").json()["resources"]["jobs"]["max"] == -1


def test_a_quota_changes_only_what_is_given_and_none_takes_a_limit_away(
    api: httpx.Client,
) -> None:
    api.put("/system/quotas/user/ana", json={"cpu": "1500m", "memory": "2Gi"})
    changed = api.put("/system/quotas/user/ana", json={"memory": "none", "gpu": "1"}).json()
    resources = changed["resources"]
    assert resources["cpu"]["max"] == 1500 and resources["memory"]["max"] == -1
    assert resources["gpu"]["max"] == 1
    admin = api.get("/system/quotas/user").json()
    assert admin["user_id"] == "cluster_admin" and admin["resources"]["cpu"]["max"] == -1


def test_the_default_quota_is_a_setting(tmp_path: Any) -> None:
    limits = Limits.parse("cpu=4, memory=16Gi,jobs=20")
    assert limits == Limits(cpu=4.0, memory=16 * 1024**3, jobs=20)
    assert Limits.parse("") == Limits()
    with pytest.raises(DefinitionError, match="quota 'cpu=4,disk=1'"):
        Settings.load({"data": tmp_path, "quota": "cpu=4,disk=1"}, environ={})
