"""The dashboard's page and what it reads, without a browser (tests/ui drives one): `/`
leads to it, it loads nothing from elsewhere, and /system/history counts a known
workload."""

from __future__ import annotations

import re

import httpx

from tests.support.waiting import wait_for


def test_the_page_is_served_whole_from_the_package(anon: httpx.Client) -> None:
    home = anon.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui"
    page = anon.get("/ui")
    assert page.status_code == 200 and "<title>ondrop</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert assets and all(a.startswith("/ui/static/") for a in assets)
    for asset in assets:
        body = anon.get(asset)
        assert body.status_code == 200 and body.text
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", body.text), asset


def test_the_dashboards_calls_get_no_browser_prompt(anon: httpx.Client) -> None:
    plain = anon.get("/system/services")
    assert plain.status_code == 401 and plain.headers["www-authenticate"].startswith("Basic")
    from_page = anon.get("/system/services", headers={"X-Requested-With": "ondrop-ui"})
    assert from_page.status_code == 401 and "www-authenticate" not in from_page.headers


def test_history_counts_the_last_minutes(api: httpx.Client) -> None:
    for name, script in (("ok", "true"), ("bad", "exit 1")):
        body = {"name": name, "script": script, "input": [{"path": f"{name}/in"}]}
        assert api.post("/system/services", json=body).status_code == 201
    for key in ("ok/in/a", "ok/in/b", "bad/in/c"):
        api.put(f"/system/files/minio.default/{key}", content=b"x")

    def ended() -> dict[str, object] | None:
        got = api.get("/system/history", params={"minutes": 5}).json()
        done = sum(m["succeeded"] + m["failed"] for m in got["minutes"])
        return got if done == 3 else None

    history = wait_for(ended, timeout=30)
    minutes = history["minutes"]
    assert len(minutes) == 5 and minutes[0]["start"] + 240 == minutes[-1]["start"]
    assert sum(m["succeeded"] for m in minutes) == 2 and sum(m["failed"] for m in minutes) == 1
    assert sum(m["started"] for m in minutes) == 3 and minutes[-1]["queued"] == 0
    assert history["jobs"] == 3
    assert 0 <= history["wait_seconds"]["p50"] <= history["wait_seconds"]["p99"]
    assert api.get("/system/history", params={"minutes": 0}).status_code == 422
    counts = api.get("/system/logs/ok", params={"limit": 1}).json()
    assert counts["counts"] == {"Succeeded": 2} and len(counts["jobs"]) == 1
