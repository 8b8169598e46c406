"""`synchronous` end to end: OSCAR's Knative scale for /run (docs/fdl.md's
SynchronousSettings) as containers kept ready from apply on, in real crun containers of a
platform on podman; and the ones kept go when the service no longer asks for them."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import httpx
import pytest

from ondrop.settings import Settings
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's, on podman."""
    return settings.with_(container_engine="podman")


def kept(service: str) -> list[str]:
    """The warm containers of `service`, by name."""
    listed = subprocess.run(["crun", "list", "-q"], capture_output=True, text=True)
    return sorted(c for c in listed.stdout.split() if f"warm-{service}-" in c)


def service(busybox: str, **synchronous: Any) -> dict[str, Any]:
    return {
        "name": "quick",
        "image": busybox,
        "script": 'echo "$(hostname) $(cat $INPUT_FILE_PATH)" > $TMP_OUTPUT_DIR/out',
        "warm": 1,  # idle ones beyond those kept ready go after a second
        "synchronous": synchronous,
    }


def test_a_synchronous_service_has_containers_ready_for_run_from_apply_on(
    api: httpx.Client, busybox: str
) -> None:
    assert api.post("/system/services", json=service(busybox, min_scale=2)).status_code == 201
    ready = wait_for(lambda: len(kept("quick")) == 2 and kept("quick"), 120)
    shown = api.get("/system/services/quick").json()["synchronous"]
    assert shown == {"min_scale": 2, "max_scale": 0}
    # /run's job runs in a container that was there before it.
    answer = api.post("/run/quick", content=b"hello")
    assert answer.status_code == 200, answer.text
    host, said = base64.b64decode(answer.text).decode().split()  # as OSCAR answers
    assert said == "hello"
    assert any(name.endswith(host) for name in ready), (host, ready)
    assert len(kept("quick")) == 2  # and it is kept for the next one
    # Asked for fewer, the spare one goes (its `warm` second idle); asked for none, all go.
    changed = api.put("/system/services", json=service(busybox, min_scale=1))
    assert changed.status_code == 204, changed.text
    wait_for(lambda: len(kept("quick")) == 1, 60)
    assert api.delete("/system/services/quick").status_code == 204
    wait_for(lambda: kept("quick") == [], 60)
