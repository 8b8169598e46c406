"""Exposed services end to end: busybox's httpd (and a websocket server made of busybox's
nc) in real containers, reached through the API's proxy, replaced when killed, scaled on
CPU, stopped, started, restarted, changed and removed. Shapes and behaviour as OSCAR's
docs/exposed-services.md and pkg/backends/resources/expose.go have them."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from ondrop import exposed
from ondrop.platform import Platform
from ondrop.settings import Settings
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

# An httpd that says who it is, echoes requests through a CGI program, and serves a
# large file; it writes into its image's /etc, as servers do with their configuration.
HTTPD = r"""mkdir -p /tmp/www/cgi-bin
echo "hello from $(hostname) at $OSCAR_SERVICE_BASE_PATH" > /tmp/www/index.html
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\n' > /tmp/www/cgi-bin/echo
printf 'echo "uri=$REQUEST_URI method=$REQUEST_METHOD"\ncat\n' >> /tmp/www/cgi-bin/echo
chmod +x /tmp/www/cgi-bin/echo
dd if=/dev/urandom of=/tmp/www/big bs=1024 count=3072 2>/dev/null
echo "listen 8080" > /etc/httpd.conf
{BEFORE}
exec httpd -f -p 8080 -h /tmp/www
"""

# A websocket server of busybox's: it answers the handshake, reads the client's first
# message (masked, as clients send them), says how long it was, and closes; a plain
# request (the health check among them) gets 200 and the headers it came with.
WEBSOCKET = r"""cat > /tmp/ws <<'EOF'
#!/bin/sh
key=""
seen=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  seen="$seen$line
"
  case "$line" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');;
  esac
done
case "$seen" in *[Tt]ransfer-[Ee]ncoding:\ chunked*)
  while IFS= read -r size; do
    size=$(printf '%s' "$size" | tr -d '\r')
    [ "$size" = 0 ] && break
    IFS= read -r data
    seen="${seen}chunk $size: $(printf '%s' "$data" | tr -d '\r')
"
  done;;
esac
case "$seen" in *"/weird HTTP"*)
  printf 'HTTP/1.1 999 Odd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'; exit 0;;
esac
if [ -z "$key" ]; then
  printf 'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' ${#seen} "$seen"
  exit 0
fi
hex=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -c1-40 \
  | sed 's/../\\x&/g')
accept=$(printf "$hex" | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
printf 'Sec-WebSocket-Accept: %s\r\n\r\n' "$accept"
set -- $(dd bs=1 count=2 2>/dev/null | od -An -tu1)
n=$(( $2 & 127 ))
dd bs=1 count=$((4 + n)) of=/dev/null 2>/dev/null
msg="got $n bytes"
printf "\201\\$(printf %03o ${#msg})%s" "$msg"
printf '\210\002\003\350'
sleep 1
EOF
chmod +x /tmp/ws
exec nc -ll -p 8080 -e /tmp/ws
"""


@pytest.fixture
def platform(
    settings: Settings, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    """conftest's platform, on podman, scaling each second rather than each 15."""
    monkeypatch.setattr(exposed, "SCALE_EVERY", 1.0)
    p = Platform(settings.with_(container_engine="podman"))
    p.start()
    try:
        yield p
    finally:
        p.stop()
    assert replicas_running() == []  # the shutdown stopped every replica


def replicas_running(service: str = "") -> list[str]:
    listed = subprocess.run(["crun", "list", "-q"], capture_output=True, text=True)
    return [c for c in listed.stdout.split() if f"-exposed-{service}" in c]


def apply(api: httpx.Client, busybox: str, name: str = "web", **expose: Any) -> dict[str, Any]:
    before = expose.pop("before", "")
    body = {
        "name": name,
        "image": busybox,
        "script": expose.pop("script", HTTPD.replace("{BEFORE}", before)),
        "memory": "64Mi",
        **expose.pop("service", {}),
        "expose": {"api_port": 8080, **expose},
    }
    known = api.get(f"/system/services/{name}").status_code == 200
    response = (api.put if known else api.post)("/system/services", json=body)
    assert response.status_code in (200, 201, 204), response.text
    return dict(api.get(f"/system/services/{name}").json())


def answered(client: httpx.Client, path: str, **kw: Any) -> httpx.Response | None:
    response = client.get(path, **kw)
    return response if response.status_code == 200 else None


def deployment(api: httpx.Client, name: str = "web") -> dict[str, Any]:
    return dict(api.get(f"/system/services/{name}/deployment").json())


def test_an_exposed_httpd_is_reached_through_the_proxy_streamed_both_ways(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    apply(api, busybox)
    page = wait_for(lambda: answered(anon, "/system/services/web/exposed/"), 120)
    # The server runs in a container named for its replica, told its base path.
    assert page.text.startswith("hello from exposed-web-")
    assert page.text.strip().endswith("at /system/services/web/exposed")
    # rewrite_target is off: the server sees the path below /exposed, with the query.
    body = b"x" * 300_000
    echoed = anon.post("/system/services/web/exposed/cgi-bin/echo?a=1&b=2", content=body)
    assert echoed.status_code == 200
    head, _, rest = echoed.content.partition(b"\n")
    assert head.startswith(b"uri=/cgi-bin/echo?a=1&b=2 method=POST")
    assert rest == body
    # A 3 MiB answer streams back whole.
    with anon.stream("GET", "/system/services/web/exposed/big") as big:
        got = b"".join(big.iter_bytes())
    assert big.status_code == 200 and len(got) == 3 * 1024 * 1024
    assert big.headers["content-length"] == str(len(got))
    # A path the server does not have is its own 404, not the platform's.
    missing = anon.get("/system/services/web/exposed/nothing-here")
    assert missing.status_code == 404 and "detail" not in missing.text
    state = deployment(api)
    assert state["state"] == "ready" and state["active_instances"] == 1
    assert state["resource_kind"] == "deployment" and state["min_scale"] == 1
    assert [r["state"] for r in state["replicas"]] == ["ready"]
    logs = api.get("/system/services/web/deployment/logs").json()
    assert logs["available"] and logs["message"].startswith("the output of replica web-")
    # The service item shows its expose as given, with OSCAR's defaults filled in.
    shown = api.get("/system/services/web").json()["expose"]
    assert shown["api_port"] == 8080 and shown["max_scale"] == 10
    assert shown["cpu_threshold"] == 80 and shown["set_auth"] is False


def test_set_auth_asks_for_the_services_token_and_keeps_it_from_the_server(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    token = apply(api, busybox, name="ws", script=WEBSOCKET, set_auth=True)["token"]
    wait_for(lambda: deployment(api, "ws")["active_instances"] == 1, 120)
    refused = anon.get("/system/services/ws/exposed/")
    assert refused.status_code == 401 and "its token" in refused.json()["detail"]
    wrong = anon.get("/system/services/ws/exposed/", auth=("ws", "not-the-token"))
    assert wrong.status_code == 401
    assert anon.get("/system/services/ws/exposed/", auth=("ws", token)).status_code == 200
    bearer = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "10.1.2.3"}
    seen = anon.get("/system/services/ws/exposed/a/b?c=d", headers=bearer)
    assert seen.status_code == 200
    lines = seen.text.lower().splitlines()
    assert lines[0] == "get /a/b?c=d http/1.1"
    assert not any(line.startswith("authorization:") for line in lines)  # ours, not its
    assert "x-forwarded-for: 10.1.2.3" in lines  # uvicorn trusts it from loopback
    assert "x-forwarded-prefix: /system/services/ws/exposed" in lines
    assert api.get("/system/services/ws/exposed/").status_code == 200  # the admin
    # The path as the caller wrote it: an encoded slash stays one.
    raw = anon.get("/system/services/ws/exposed/a%2Fb%3F?c=%20", headers=bearer)
    assert raw.text.lower().splitlines()[0] == "get /a%2fb%3f?c=%20 http/1.1"


def test_rewrite_target_passes_the_whole_path_and_checks_health_below_it(
    api: httpx.Client, anon: httpx.Client, busybox: str, platform: Platform
) -> None:
    apply(api, busybox, name="ws", script=WEBSOCKET, rewrite_target=True, health_path="/up")
    wait_for(lambda: deployment(api, "ws")["active_instances"] == 1, 120)
    seen = anon.get("/system/services/ws/exposed/x", headers={"Authorization": "Basic eDp5"})
    lines = seen.text.lower().splitlines()
    assert lines[0] == "get /system/services/ws/exposed/x http/1.1"
    assert "authorization: basic eDp5".lower() in lines  # no set_auth: the server's to check
    # A status HTTP does not have is the replica's fault (502), and leaves nothing held.
    weird = anon.get("/system/services/ws/exposed/weird")
    assert weird.status_code == 502 and "status 999" in weird.json()["detail"]
    held = [r.in_flight for r in platform.exposed._deployments["ws"].replicas]
    assert held == [0]
    # ... unless it opens something of the platform's: the admin's never reaches a server.
    lines = api.get("/system/services/ws/exposed/x").text.lower().splitlines()
    assert lines[0] == "get /system/services/ws/exposed/x http/1.1"
    assert not any(line.startswith("authorization:") for line in lines)
    # A request body of unknown length goes on chunked, as it came.
    streamed = anon.post("/system/services/ws/exposed/up", content=iter([b"one ", b"two"]))
    lines = streamed.text.lower().splitlines()
    assert "transfer-encoding: chunked" in lines and lines[-1] == "chunk 7: one two"
    logs = api.get("/system/services/ws/deployment/logs").json()
    assert logs["available"] is False or "ws" in logs["message"]


def test_a_killed_replica_is_replaced_and_serves_again(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    apply(api, busybox)
    first = wait_for(lambda: deployment(api)["active_instances"] == 1 and deployment(api), 120)
    killed = first["replicas"][0]["id"]
    names = replicas_running("web")
    assert len(names) == 1 and names[0].endswith(killed)
    subprocess.run(["crun", "kill", names[0], "KILL"], check=True)
    again = wait_for(
        lambda: (
            (d := deployment(api))["active_instances"] == 1
            and d["replicas"][0]["id"] != killed
            and d
        ),
        120,
    )
    assert again["restarts"] == 1
    assert anon.get("/system/services/web/exposed/").text.startswith("hello from exposed-web-")
    logs = api.get("/system/services/web/deployment/logs").json()
    assert logs["message"].startswith(f"the output of replica {again['replicas'][0]['id']}")


def test_replicas_are_added_when_their_cpu_is_busy_and_rm_stops_them(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    # Each replica spins one loop: 100% of its half core, above the 50% threshold.
    apply(
        api,
        busybox,
        before="(while :; do :; done) &",
        service={"cpu": "0.5"},
        min_scale=1,
        max_scale=2,
        cpu_threshold=50,
    )
    scaled = wait_for(lambda: (d := deployment(api))["active_instances"] == 2 and d, 120)
    assert scaled["desired_instances"] == 2 and len(replicas_running("web")) == 2
    assert api.delete("/system/services/web").status_code == 204
    wait_for(lambda: replicas_running("web") == [], 60)


def test_stop_start_and_restart_keep_the_definition(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    apply(api, busybox)
    first = wait_for(lambda: (d := deployment(api))["active_instances"] == 1 and d, 120)
    stopping = api.post("/system/services/web/stop")
    assert stopping.status_code == 200 and stopping.json()["service_name"] == "web"
    wait_for(lambda: replicas_running("web") == [], 60)
    assert deployment(api)["state"] == "stopped"
    stopped = anon.get("/system/services/web/exposed/")
    assert stopped.status_code == 503 and "/start" in stopped.json()["detail"]
    assert api.post("/system/services/web/start").status_code == 200
    started = wait_for(lambda: (d := deployment(api))["active_instances"] == 1 and d, 120)
    assert started["replicas"][0]["id"] != first["replicas"][0]["id"]
    assert api.post("/system/services/web/restart").json()["state"] == "ready"
    restarted = wait_for(
        lambda: (
            (d := deployment(api))["replicas"]
            and all(r["id"] != started["replicas"][0]["id"] for r in d["replicas"])
            and d["active_instances"] == 1
            and d
        ),
        120,
    )
    assert len(restarted["replicas"]) == 1
    wait_for(lambda: len(replicas_running("web")) == 1, 60)
    # Only exposed services have a deployment to stop.
    api.post("/system/services", json={"name": "plain", "script": "true"})
    plain = api.post("/system/services/plain/stop")
    assert plain.status_code == 400 and "not exposed" in plain.json()["detail"]


def test_a_changed_service_gets_new_replicas_that_run_the_change(
    api: httpx.Client, anon: httpx.Client, busybox: str
) -> None:
    apply(api, busybox)
    wait_for(lambda: answered(anon, "/system/services/web/exposed/"), 120)
    apply(api, busybox, before="echo changed > /tmp/www/changed.txt")
    page = wait_for(lambda: answered(anon, "/system/services/web/exposed/changed.txt"), 120)
    assert page.text == "changed\n"
    wait_for(lambda: len(replicas_running("web")) == 1, 60)  # the old one is stopped


def test_websockets_pass_through_both_ways(api: httpx.Client, base_url: str, busybox: str) -> None:
    apply(api, busybox, name="ws", script=WEBSOCKET)
    wait_for(lambda: deployment(api, "ws")["active_instances"] == 1, 120)
    url = base_url.replace("http://", "ws://") + "/system/services/ws/exposed/chat"
    with ws_connect(url, open_timeout=30) as websocket:
        websocket.send("twelve bytes")
        assert websocket.recv(timeout=30) == "got 12 bytes"


def test_a_platform_killed_leaves_no_replica_and_starts_them_again(
    tmp_path: Path, busybox: str
) -> None:
    from tests.support.up import Platform as Up

    up = Up(tmp_path / "data")
    up.start()
    try:
        fdl = tmp_path / "web.yaml"
        script = "".join(f"      {line}\n" for line in HTTPD.replace("{BEFORE}", "").splitlines())
        fdl.write_text(
            f"services:\n  - name: web\n    image: {busybox}\n    memory: 64Mi\n"
            f"    script: |\n{script}    expose: {{api_port: 8080}}\n"
        )
        up.cli("apply", str(fdl))
        with httpx.Client(base_url=up.url, timeout=60) as anon:
            wait_for(lambda: answered(anon, "/system/services/web/exposed/"), 120)
        (before,) = replicas_running("web")
        assert before in mounted()  # its writable root
        up.stop(signal.SIGKILL)
        assert replicas_running("web") == [before]  # it outlives the killed platform
        up.start()
        # On the way up the dead platform's replica, its cgroup and its root are removed,
        # and a new one serves.
        with httpx.Client(base_url=up.url, timeout=60) as anon:
            wait_for(lambda: answered(anon, "/system/services/web/exposed/"), 120)
        (after,) = replicas_running("web")
        assert after != before and before not in mounted() and after in mounted()
    finally:
        up.stop_now(0.3)
    assert replicas_running("web") == []
    assert "-exposed-web-" not in mounted()


def mounted() -> str:
    return Path("/proc/self/mountinfo").read_text()
