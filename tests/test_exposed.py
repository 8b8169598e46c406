"""Exposed services' own logic: `expose` as OSCAR's clients send it, and how many replicas
the CPU they use asks for (Kubernetes' autoscaler's rule and its scale-down window). The
replicas themselves, in real containers, are in tests/e2e/test_exposed_e2e.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ondrop import exposed
from ondrop.exposed import Deployment, Exposed, Replica, desired, health_path
from ondrop.fdl.models import Expose, Service
from ondrop.fdl.oscar import NOT_EXPOSED, item
from ondrop.runtime.base import Served


def service(**expose: Any) -> Service:
    return Service.model_validate({"name": "web", "image": "nginx", "expose": expose})


def test_expose_takes_oscars_shapes_with_its_defaults() -> None:
    given = service(api_port=[5000], min_scale=0, max_scale=0, cpu_threshold=0, nodePort=None)
    assert given.expose == Expose.model_validate({"api_port": 5000})
    defaults = given.expose
    assert (defaults.min_scale, defaults.max_scale, defaults.cpu_threshold) == (1, 10, 80)
    assert defaults.health_path == "/" and not defaults.set_auth
    assert service(api_port=80, health_path="health").expose.health_path == "/health"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "shown",
    [None, NOT_EXPOSED, {"api_port": 0, "min_scale": 0, "max_scale": 0}, {"api_port": []}],
)
def test_an_expose_without_a_port_asks_for_nothing(shown: Any) -> None:
    # What a client that read a service sends back: OSCAR's zero values.
    assert Service.model_validate({"name": "job", "script": "true", "expose": shown}).expose is None
    assert item(Service.model_validate({"name": "job", "script": "true"}))["expose"] == NOT_EXPOSED


@pytest.mark.parametrize(
    ("expose", "extra", "says"),
    [
        ({"api_port": [80, 81]}, {}, "proxies one port"),
        ({"api_port": 80, "nodePort": [30080]}, {}, "nodePort"),
        ({"api_port": 80, "min_scale": 5, "max_scale": 2}, {}, "below min_scale"),
        ({"api_port": 70000}, {}, "api_port"),
        ({"api_port": 80}, {"network": True}, "network of its own"),
        ({"api_port": 80, "health_path": "/a b"}, {}, "health_path"),
    ],
)
def test_a_wrong_expose_is_refused_saying_what(
    expose: dict[str, Any], extra: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        Service.model_validate({"name": "web", "image": "nginx", "expose": expose, **extra})


def test_rewrite_target_puts_the_health_path_below_the_base_path() -> None:
    plain = Expose.model_validate({"api_port": 80, "health_path": "/up"})
    assert health_path("web", plain) == "/up"
    rewritten = Expose.model_validate(
        {"api_port": 80, "health_path": "/up", "rewrite_target": True}
    )
    assert health_path("web", rewritten) == "/system/services/web/exposed/up"
    direct = Expose.model_validate(
        {"api_port": 80, "health_path": "/up", "rewrite_target": True, "probe_mode": "direct"}
    )
    assert health_path("web", direct) == "/up"


@pytest.mark.parametrize(
    ("current", "uses", "threshold", "wanted"),
    [
        (1, [1.0], 50, 2),  # double the threshold: twice as many
        (2, [1.0, 0.9], 50, 4),
        (2, [0.85, 0.8], 80, 2),  # within the 10% tolerance
        (4, [0.1, 0.1, 0.1, 0.1], 80, 1),
        (3, [0.0, 0.0, 0.0], 80, 1),  # never below one: min_scale decides that
        (0, [], 80, 0),
    ],
)
def test_replicas_follow_kubernetes_autoscaler_rule(
    current: int, uses: list[float], threshold: int, wanted: int
) -> None:
    assert desired(current, uses, threshold) == wanted


class Spinning(Served):
    def __init__(self, name: str) -> None:
        self.name, self.pid = name, 1

    def alive(self) -> bool:
        return True

    def log(self, lines: int) -> str:
        return ""

    def stop(self, grace: float) -> None:
        pass


def test_a_fall_in_use_lowers_the_count_only_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web = service(api_port=80, min_scale=1, max_scale=4, cpu_threshold=50)
    assert web.expose is not None
    dep = Deployment("web", target=1)
    dep.replicas = [Replica("web-a", "v", 80, state="ready", served=Spinning("a"))]
    used = {"total": 0.0}
    monkeypatch.setattr(exposed, "cpu_seconds", lambda pid: used["total"])
    keeper = Exposed.__new__(Exposed)

    def look(now: float, busy: float) -> None:
        """Seconds since the last look at `now`, each replica busy `busy` of its core."""
        used["total"] += busy * exposed.SCALE_EVERY
        keeper._scale(dep, web, now)

    look(0.0, 0.0)  # the first look only samples
    assert dep.target == 1
    look(15.0, 1.0)  # one replica at 100% of its core, threshold 50%: two
    assert dep.target == 2
    dep.replicas.append(Replica("web-b", "v", 80, state="ready", served=Spinning("b")))
    look(30.0, 0.0)  # a new replica's use is not known yet: nothing changes
    assert dep.target == 2
    for now in (45.0, 60.0, 300.0):  # idle, but within the window of the higher count
        look(now, 0.0)
        assert dep.target == 2
    look(15.0 + exposed.SCALE_DOWN_AFTER + 1, 0.0)  # the window has passed
    assert dep.target == 1


def test_a_process_service_cannot_be_exposed(api: httpx.Client) -> None:
    body = {"name": "web", "script": "python3 -m http.server 8000", "expose": {"api_port": 8000}}
    refused = api.post("/system/services", json=body)
    assert refused.status_code == 422
    assert "expose: an exposed service's server runs in a container" in refused.text
    assert api.get("/system/services/web").status_code == 404


def test_proxying_to_a_service_that_is_not_exposed_is_a_404(api: httpx.Client) -> None:
    assert api.post("/system/services", json={"name": "job", "script": "true"}).is_success
    missing = api.get("/system/services/job/exposed/")
    assert missing.status_code == 404 and "not exposed" in missing.json()["detail"]
    assert api.get("/system/services/none/exposed/x").status_code == 404
    assert api.post("/system/services/job/restart").status_code == 400
