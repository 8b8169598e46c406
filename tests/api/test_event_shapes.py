"""`/job` and `/run` with every event shape OSCAR's faas-supervisor reads, through the API of
a running platform: API Gateway (unwrapped, base64 when flagged, its query as CONT_VAR_*),
the delegated form OSCAR clusters send, dCache, OneTrigger (Onedata), unknown bodies; Rucio
events, and OneTrigger events for a space the service has no input on, refused saying
why."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx

from ondrop.fdl.models import Service
from ondrop.platform import Platform
from ondrop.settings import Settings
from tests.api.test_api import create, wait_job
from tests.conftest import ADMIN, listening_socket, serving
from tests.support.oneprovider import Oneprovider
from tests.support.servers import WebDAV
from tests.support.waiting import wait_for

# The input, then "|" and the query parameter q1.
SHOW = """out="$TMP_OUTPUT_DIR/out"
cat "$INPUT_FILE_PATH" > "$out"
printf '|%s' "$CONT_VAR_q1" >> "$out"
"""


def minio_event(key: str) -> dict[str, Any]:
    bucket, _, rest = key.partition("/")
    record = {
        "eventSource": "minio:s3",
        "s3": {"bucket": {"name": bucket}, "object": {"key": rest}},
    }
    return {"Key": key, "Records": [record]}


def run(api: httpx.Client, service: str, event: Any) -> bytes:
    answer = api.post(f"/run/{service}", json=event, headers={"Accept": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    return answer.content


def test_an_api_gateway_event_runs_on_its_body_with_its_query_as_variables(
    api: httpx.Client,
) -> None:
    create(api, "show", script=SHOW)
    flagged = {
        "httpMethod": "POST",
        "body": base64.b64encode(b"it works!").decode(),
        "isBase64Encoded": True,
        "queryStringParameters": {"q1": "v1"},
    }
    assert run(api, "show", flagged) == b"it works!|v1"
    assert run(api, "show", {"httpMethod": "POST", "body": "as it is"}) == b"as it is|"
    answer = api.post("/job/show", json=flagged)
    assert answer.status_code == 201, answer.text
    assert wait_job(api, "show", answer.json()["job_id"])["status"] == "Succeeded"


def test_a_storage_event_inside_api_gateway_or_delegated_starts_the_objects_job(
    api: httpx.Client,
) -> None:
    create(api)
    uploaded = api.put("/system/files/minio.default/copy/in/a.txt", content=b"a\n")
    assert uploaded.status_code in (200, 201), uploaded.text
    (first,) = [j["job"] for j in uploaded.json()["jobs"]]
    inner = minio_event("copy/in/a.txt")
    for event in (
        {"httpMethod": "POST", "body": json.dumps(inner)},
        {"storage_provider": "minio.default", "event": json.dumps(inner)},  # OSCAR's form
        {"storage_provider": "oscar-cluster-2", "event": inner},  # an older OSCAR's: its id
        {"httpMethod": "POST", "body": {"storage_provider": "minio", "event": inner}},
    ):
        answer = api.post("/job/copy", json=event)
        assert answer.status_code == 201, (event, answer.text)
        assert answer.json()["job_id"] == first  # that object's job, as the upload started it
    missing = api.post("/job/copy", json={"event": minio_event("copy/in/none.txt")})
    assert missing.status_code == 404 and "copy/in/none.txt" in missing.json()["detail"]


def test_an_unknown_body_is_the_input_file_and_rucio_or_a_foreign_space_say_why_not(
    api: httpx.Client,
) -> None:
    create(api, "show", script=SHOW)
    other = {"Records": [{"eventSource": "narnia", "x": 1}]}
    assert json.loads(run(api, "show", other).removesuffix(b"|")) == other
    onetrigger = {
        "Key": "/space/files/f.txt",
        "Records": [{"objectKey": "f.txt", "objectId": "0a1b", "eventSource": "OneTrigger"}],
    }
    rucio = {"event_type": "close", "payload": {"scope": "user.jdoe", "name": "ds"}}
    for event, said in ((onetrigger, "Onedata space"), (rucio, "Rucio storage")):
        answer = api.post("/job/show", json=event)
        assert answer.status_code == 400 and said in answer.json()["detail"]
    assert len(api.get("/system/logs/show").json()["jobs"]) == 1  # the unknown body's alone


@contextlib.contextmanager
def platform_api(settings: Settings) -> Iterator[tuple[Platform, httpx.Client]]:
    """A started platform and a client of its API as the admin."""
    platform = Platform(settings)
    platform.start()
    with (
        contextlib.ExitStack() as stack,
        serving(platform, listening_socket()) as url,
        httpx.Client(base_url=url, auth=(ADMIN.user, ADMIN.password)) as api,
    ):
        stack.callback(platform.stop)
        yield platform, api


def copier(name: str, provider: str, path: str, out: str, config: dict[str, Any]) -> Service:
    """A service copying its input at `path` on `provider` (declared with `config`) to
    `out` on local.default."""
    kind, _, ident = provider.partition(".")
    return Service.model_validate(
        {
            "name": name,
            "script": 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"',
            "input": [{"storage_provider": provider, "path": path}],
            "output": [{"storage_provider": "local.default", "path": out}],
            "storage_providers": {kind: {ident: config}},
        }
    )


def test_a_dcache_event_runs_on_the_file_in_the_input_on_webdav_dcache(
    settings: Settings, webdav: WebDAV
) -> None:
    with platform_api(settings) as (platform, api):
        dav = {"hostname": webdav.url, "login": webdav.user, "password": webdav.password}
        platform.apply([copier("dc", "webdav.dcache", "dcache/in", "dcache/out", dav)])
        platform.providers.get("webdav.dcache").put("dcache/in/image2.jpg", io.BytesIO(b"jpg"))
        event = {"event": {"name": "image2.jpg", "mask": ["IN_CREATE"]}, "subscription": "s"}
        answer = api.post("/job/dc", json=event)
        assert answer.status_code == 201, answer.text
        job = wait_job(api, "dc", answer.json()["job_id"])
        assert job["status"] == "Succeeded" and job["input"] == "dcache/in/image2.jpg"
        out = platform.providers.get("local.default")
        assert wait_for(lambda: out.stat("dcache/out/image2.jpg"))
        gone = api.post("/job/dc", json={"event": {"name": "nope.jpg"}, "subscription": "s"})
        assert gone.status_code == 404 and "dcache/in/nope.jpg" in gone.json()["detail"]


def test_a_onetrigger_event_runs_on_the_file_in_the_input_on_that_space(
    settings: Settings, oneprovider: Oneprovider
) -> None:
    with platform_api(settings) as (platform, api):
        space = {"oneprovider_host": oneprovider.url, "token": "t0ken", "space": "space1"}
        platform.apply([copier("od", "onedata.hub", "files/in", "od/out", space)])
        oneprovider.write("space1", "files/in/f.txt", b"from the space")

        def onetrigger(path: str) -> dict[str, Any]:
            record = {"objectKey": path.rpartition("/")[2], "eventSource": "OneTrigger"}
            return {"Key": path, "Records": [{**record, "objectId": "00a1"}]}

        answer = api.post("/job/od", json=onetrigger("/space1/files/in/f.txt"))
        assert answer.status_code in (200, 201), answer.text
        job = wait_job(api, "od", answer.json()["job_id"])
        assert job["status"] == "Succeeded" and job["input"] == "files/in/f.txt"
        out = platform.providers.get("local.default")
        assert wait_for(lambda: out.stat("od/out/f.txt"))
        again = api.post("/job/od", json=onetrigger("/space1/files/in/f.txt"))
        assert again.json()["job_id"] == answer.json()["job_id"]  # one job per version
        gone = api.post("/job/od", json=onetrigger("/space1/files/in/nope.txt"))
        assert gone.status_code == 404 and "files/in/nope.txt" in gone.json()["detail"]
        other = api.post("/job/od", json=onetrigger("/elsewhere/files/in/f.txt"))
        assert other.status_code == 400 and "'elsewhere'" in other.json()["detail"]
