"""The Oneprovider test server (tests/support/oneprovider.py) against what a real one does:
Onedata's own REST client (onedatafilerestclient, from PyPI) must pass its calls against
it, over TLS as it requires; the rest of the API (the changes stream, errors, ranges,
pages) is checked with plain requests."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from onedatafilerestclient import OnedataFileRESTClient, OnedataRESTError
from onedatafilerestclient.errors import ReadonlyTokenError

from tests.support.oneprovider import DEFAULT_ATTRIBUTES, Oneprovider

API = "/api/v3/oneprovider"
SPEC: dict[str, Any] = {
    "fileMeta": {"fields": ["name", "type", "deleted"], "always": True},
    "fileLocation": {"fields": ["size"], "always": True},
    "times": {"fields": ["mtime"], "always": True},
}


@pytest.fixture
def tls_server() -> Iterator[Oneprovider]:
    with Oneprovider(tls=True) as server:
        server.add_space("space1")
        server.add_token("t0ken")
        yield server


def pypi_client(server: Oneprovider, token: str = "t0ken") -> OnedataFileRESTClient:
    """Onedata's client on the server as Onezone and Oneprovider, trusting its CA. (It sends
    with Session.send, which ignores REQUESTS_CA_BUNDLE: the sessions are told.)"""
    assert server.ca_file is not None
    client = OnedataFileRESTClient(server.host, token)
    for session in (client._op_client.session, client._oz_client._http_client.session):
        session.verify = server.ca_file
    return client


def closed(client: OnedataFileRESTClient) -> None:
    client._op_client.session.close()
    client._oz_client._http_client.session.close()


@pytest.fixture
def client(tls_server: Oneprovider) -> Iterator[OnedataFileRESTClient]:
    c = pypi_client(tls_server)
    yield c
    closed(c)


@pytest.fixture
def rest(oneprovider: Oneprovider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=oneprovider.url, headers={"X-Auth-Token": "t0ken"}) as c:
        yield c


def space_id(rest: httpx.Client) -> str:
    return str(rest.get(f"{API}/spaces").json()[0]["spaceId"])


def error(response: httpx.Response) -> dict[str, Any]:
    found: dict[str, Any] = response.json()["error"]
    return found


def records(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line.strip()]


# -- Onedata's own client -------------------------------------------------------------------
def test_the_pypi_client_writes_reads_and_removes_files(
    client: OnedataFileRESTClient, tls_server: Oneprovider
) -> None:
    file_id = client.create_file("space1", "a/b/c.txt", create_parents=True)
    assert tls_server.read("space1", "a/b/c.txt") == b""
    client.put_file_content("space1", b"hello world", file_id=file_id)
    client.put_file_content("space1", b"!!", offset=11, file_path="a/b/c.txt")
    assert tls_server.read("space1", "a/b/c.txt") == b"hello world!!"
    assert client.get_file_content("space1", file_path="a/b/c.txt") == b"hello world!!"
    assert client.get_file_content("space1", file_id=file_id, offset=6, size=5) == b"world"
    chunks = list(client.iter_file_content("space1", file_id=file_id, chunk_size=4))
    assert b"".join(chunks) == b"hello world!!" and len(chunks) == 4
    assert client.get_file_id("space1", file_path="a/b/c.txt") == file_id

    attrs = client.get_attributes("space1", file_path="a/b/c.txt")
    assert list(attrs) == [a for a in DEFAULT_ATTRIBUTES if a != "path"]  # the client's set
    assert attrs["fileId"] == file_id and attrs["name"] == attrs["index"] == "c.txt"
    assert attrs["type"] == "REG" and attrs["size"] == 13 and attrs["posixPermissions"] == "664"
    assert attrs["parentFileId"] == client.get_file_id("space1", file_path="a/b")
    assert attrs["originProviderId"] == tls_server.provider_id
    assert isinstance(attrs["mtime"], int) and attrs["directShareIds"] == []
    chosen = client.get_attributes("space1", file_path="a", attributes=["name", "size", "path"])
    assert chosen == {"name": "a", "size": None, "path": "/space1/a"}

    client.remove("space1", file_path="a")
    assert tls_server.read("space1", "a/b/c.txt") is None
    with pytest.raises(OnedataRESTError) as caught:
        client.get_file_id("space1", file_path="a/b/c.txt")
    assert (caught.value.http_code, caught.value.category) == (400, "posix")
    assert caught.value.details == {"errno": "enoent"}


def test_the_pypi_client_lists_children_a_page_at_a_time(
    client: OnedataFileRESTClient, tls_server: Oneprovider
) -> None:
    for i in range(5):
        tls_server.write("space1", f"d/f{i}", b"x" * i)
    tls_server.mkdir("space1", "d/sub")
    names, token, pages = [], None, 0
    while True:
        page = client.list_children("space1", file_path="d", limit=2, continuation_token=token)
        names += [(c["name"], c["type"]) for c in page["children"]]
        pages += 1
        if page["isLast"]:
            assert page["nextPageToken"] is None
            break
        token = page["nextPageToken"]
    assert pages == 3
    assert names == [(f"f{i}", "REG") for i in range(5)] + [("sub", "DIR")]
    sized = client.list_children("space1", file_path="d", attributes=["name", "size"])
    assert sized["isLast"] and [c["size"] for c in sized["children"]] == [0, 1, 2, 3, 4, None]


def test_the_pypi_client_moves_onto_new_names_and_existing_files(
    client: OnedataFileRESTClient, tls_server: Oneprovider
) -> None:
    moved = tls_server.write("space1", "in/a.txt", b"a")
    replaced = tls_server.write("space1", "in/b.txt", b"b")
    client.move("space1", "in/a.txt", "space1", "in/c.txt")
    assert client.get_file_id("space1", file_path="in/c.txt") == moved
    assert tls_server.read("space1", "in/a.txt") is None
    before = tls_server.seq("space1")
    client.move("space1", "in/c.txt", "space1", "in/b.txt")
    assert client.get_file_id("space1", file_path="in/b.txt") == moved
    assert tls_server.read("space1", "in/b.txt") == b"a"
    assert tls_server.seq("space1") == before + 2  # the replaced file's delete, the rename
    with pytest.raises(OnedataRESTError) as caught:
        client.get_attributes("space1", file_id=replaced)
    assert (caught.value.http_code, caught.value.category) == (404, "notFound")
    assert tls_server.requests["move"] == 2


def test_the_pypi_client_sees_the_tokens_spaces(tls_server: Oneprovider) -> None:
    second = tls_server.add_space("space2")
    tls_server.add_token("only2", spaces=["space2"])
    tls_server.add_token("reader", readonly=True)
    everything, only2, reader = (pypi_client(tls_server, t) for t in ("t0ken", "only2", "reader"))
    try:
        assert everything.list_spaces() == ["space1", "space2"]
        assert only2.list_spaces() == ["space2"] and only2.get_space_id("space2") == second
        assert everything.get_space_id("space1") != second
        assert reader.get_file_id("space1") is not None
        with pytest.raises(ReadonlyTokenError):
            reader.create_file("space1", "x.txt")
    finally:
        for c in (everything, only2, reader):
            closed(c)


# -- the changes stream ---------------------------------------------------------------------
def test_changes_stream_records_in_order_and_flushes_each_at_once(
    oneprovider: Oneprovider, rest: httpx.Client
) -> None:
    spec = {"fileMeta": {"fields": ["name", "deleted"]}, "fileLocation": {"fields": ["size"]}}
    url = f"{API}/changes/metadata/{space_id(rest)}"
    oneprovider.write("space1", "before.txt", b"not sent: it came before the request")
    with rest.stream("POST", url, json=spec, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        lines = response.iter_lines()
        file_id = oneprovider.write("space1", "a/b.txt", b"hello", chunks=2)
        first = json.loads(next(lines))  # arrives while the stream stays open
        at = f"/{space_id(rest)}"  # canonical paths start with the space's id
        assert first["filePath"] == f"{at}/a" and first["fileMeta"]["changed"] is True
        got = [first] + [json.loads(next(lines)) for _ in range(3)]
    docs = [(r["filePath"], next(d for d in ("fileMeta", "fileLocation") if d in r)) for r in got]
    assert docs == [
        (f"{at}/a", "fileMeta"),
        (f"{at}/a/b.txt", "fileMeta"),
        (f"{at}/a/b.txt", "fileLocation"),
        (f"{at}/a/b.txt", "fileLocation"),
    ]
    assert [r["fileLocation"]["fields"] for r in got[2:]] == [{"size": 3}, {"size": 5}]
    assert got[1]["fileId"] == file_id and got[1]["fileMeta"]["fields"] == {
        "name": "b.txt",
        "deleted": False,
    }
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(set(seqs)) and seqs[-1] == oneprovider.seq("space1") - 1  # times last


def test_changes_records_carry_the_always_docs_and_resume_after_last_seq(
    oneprovider: Oneprovider, rest: httpx.Client
) -> None:
    url = f"{API}/changes/metadata/{space_id(rest)}"
    file_id = oneprovider.write("space1", "f.txt", b"abc")
    oneprovider.remove("space1", "f.txt")
    assert oneprovider.seq("space1") == 4
    with rest.stream("POST", url, params={"last_seq": 0, "timeout": 100}, json=SPEC) as r:
        got = records(r)
    assert [x["seq"] for x in got] == [1, 2, 3, 4]
    created = got[0]
    assert created["fileId"] == file_id
    assert created["filePath"] == f"/{space_id(rest)}/f.txt"
    assert created["fileMeta"]["changed"] is True
    assert created["fileMeta"]["fields"] == {"name": "f.txt", "type": "REG", "deleted": False}
    assert created["fileMeta"]["mutators"] == [oneprovider.provider_id]
    assert created["fileMeta"]["rev"].startswith("1-")
    assert created["fileLocation"] == {
        **created["fileLocation"],
        "changed": False,
        "fields": {"size": 3},
    }
    assert created["times"]["changed"] is False and isinstance(
        created["times"]["fields"]["mtime"], int
    )
    assert got[1]["fileLocation"]["changed"] and got[2]["times"]["changed"]
    assert got[3]["fileMeta"]["deleted"] and got[3]["fileMeta"]["fields"]["deleted"] is True
    assert got[3]["fileMeta"]["rev"].startswith("2-")
    body = {**SPEC, "last_seq": 2, "timeout": 100}  # in the body as well
    with rest.stream("POST", url, json=body) as r:
        assert [x["seq"] for x in records(r)] == [3, 4]


def test_changes_stream_ends_after_the_timeout_or_when_the_server_stops() -> None:
    with Oneprovider() as server:
        sid = server.add_space("space1")
        server.add_token("t0ken")
        url = f"{server.url}{API}/changes/metadata/{sid}"
        headers = {"X-Auth-Token": "t0ken"}
        with httpx.Client(headers=headers, timeout=5) as c:
            with c.stream("POST", url, params={"timeout": 50}, json=SPEC) as r:
                assert records(r) == []  # ended, nothing changed
            with c.stream("POST", url, json=SPEC) as r:  # no timeout: open until the stop
                stopping = threading.Thread(target=server.stop)
                stopping.start()
                assert records(r) == []
                stopping.join(5)
                assert not stopping.is_alive()


def test_changes_stream_refusals(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    url = f"{API}/changes/metadata/{space_id(rest)}"
    oneprovider.add_token("no-changes", changes=False)
    refused = rest.post(url, json=SPEC, headers={"X-Auth-Token": "no-changes"})
    assert refused.status_code == 403 and error(refused)["id"] == "forbidden"
    empty = rest.post(url, json={})
    assert empty.status_code == 400 and error(empty)["id"] == "missingAtLeastOneValue"
    unknown = rest.post(url, json={"times": {"fields": ["birth"]}})
    assert unknown.status_code == 400 and error(unknown)["id"] == "badValueNotAllowed"
    garbled = rest.post(url, content=b"{not json")
    assert garbled.status_code == 400 and error(garbled)["id"] == "badValueJSON"
    assert oneprovider.requests["changes"] == 4


# -- the REST API directly ------------------------------------------------------------------
def test_tokens_are_checked(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    for headers in ({"X-Auth-Token": "wrong"}, {"X-Auth-Token": ""}):
        refused = rest.get(f"{API}/spaces", headers=headers)
        assert refused.status_code == 401 and error(refused)["id"] == "unauthorized"
    bearer = rest.get(
        f"{API}/spaces", headers={"X-Auth-Token": "", "Authorization": "Bearer t0ken"}
    )
    assert bearer.status_code == 200 and [s["name"] for s in bearer.json()] == ["space1"]
    oneprovider.add_space("other")
    oneprovider.add_token("t1", spaces=["other"])
    oneprovider.add_token("reader", readonly=True)
    sid = space_id(rest)
    foreign = rest.get(f"{API}/data/{sid}/children", headers={"X-Auth-Token": "t1"})
    assert foreign.status_code == 403 and error(foreign)["id"] == "forbidden"
    ro = rest.put(f"{API}/data/{sid}/path/x.txt", headers={"X-Auth-Token": "reader"})
    assert ro.status_code == 403
    scope = rest.post("/api/v3/onezone/tokens/infer_access_token_scope", json={"token": "nope"})
    assert scope.status_code == 401


def test_spaces_lookups_and_posix_errors(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    sid = space_id(rest)
    space = rest.get(f"{API}/spaces/{sid}").json()
    assert space["name"] == "space1" and space["fileId"] == space["dirId"]
    assert space["providers"][0]["providerId"] == oneprovider.provider_id
    assert rest.get(f"{API}/spaces/nope").status_code == 404
    file_id = oneprovider.write("space1", "a b/ç.txt", b"x")
    found = rest.post(f"{API}/lookup-file-id/space1%40{sid}/a%20b/%C3%A7.txt")
    assert found.json() == {"fileId": file_id}
    assert rest.post(f"{API}/lookup-file-id/space1").json() == {"fileId": space["fileId"]}
    missing = rest.post(f"{API}/lookup-file-id/space1/nope.txt")
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "id": "posix",
            "description": "Operation failed with POSIX error: enoent.",
            "details": {"errno": "enoent"},
        }
    }
    again = rest.put(f"{API}/data/{sid}/path/a b/ç.txt")
    assert again.status_code == 400 and error(again)["details"]["errno"] == "eexist"
    orphan = rest.put(f"{API}/data/{sid}/path/no/such/x.txt")
    assert error(orphan)["details"]["errno"] == "enoent"
    assert error(rest.get(f"{API}/data/{file_id}/children"))["details"]["errno"] == "enotdir"
    folder = oneprovider.mkdir("space1", "a b")
    assert error(rest.get(f"{API}/data/{folder}/content"))["details"]["errno"] == "eisdir"
    assert rest.get(f"{API}/data/0000nope").status_code == 404
    bad = rest.get(f"{API}/data/{file_id}", params={"attribute": "colour"})
    assert bad.status_code == 400 and error(bad)["details"]["key"] == "attribute"
    assert rest.get(f"{API}/nowhere").status_code == 404
    root = rest.delete(f"{API}/data/{sid}")
    assert root.status_code == 403


def test_files_are_created_written_and_deleted(
    oneprovider: Oneprovider, rest: httpx.Client
) -> None:
    sid, octets = space_id(rest), {"Content-Type": "application/octet-stream"}
    untyped = rest.post(f"{API}/data/{sid}/children", params={"name": "n.txt"}, content=b"12345")
    assert untyped.status_code == 415  # content only as application/octet-stream
    made = rest.post(
        f"{API}/data/{sid}/children", params={"name": "n.txt"}, content=b"12345", headers=octets
    )
    assert made.status_code == 201
    file_id = made.json()["fileId"]
    wrote = rest.put(
        f"{API}/data/{file_id}/content", params={"offset": 3}, content=b"XYZ", headers=octets
    )
    assert wrote.status_code == 204 and oneprovider.read("space1", "n.txt") == b"123XYZ"
    rest.put(f"{API}/data/{file_id}/content", content=b"ab", headers=octets)  # the whole
    assert oneprovider.read("space1", "n.txt") == b"ab"
    deep = rest.put(
        f"{API}/data/{sid}/path/p/q/r.txt",
        params={"create_parents": "true"},
        content=b"r",
        headers=octets,
    )
    assert deep.status_code == 201 and oneprovider.read("space1", "p/q/r.txt") == b"r"
    attrs = rest.get(f"{API}/data/{deep.json()['fileId']}").json()
    assert attrs["path"] == "/space1/p/q/r.txt" and attrs["size"] == 1
    folder = rest.get(f"{API}/data/{oneprovider.mkdir('space1', 'p')}").json()
    assert folder["type"] == "DIR" and folder["size"] is None
    assert rest.delete(f"{API}/data/{sid}/path/p").status_code == 204
    assert oneprovider.read("space1", "p/q/r.txt") is None
    assert oneprovider.write("space1", "n.txt", b"in place", chunks=3) == file_id


def test_ranged_reads(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    file_id = oneprovider.write("space1", "r.bin", bytes(range(100)))
    url = f"{API}/data/{file_id}/content"
    whole = rest.get(url)
    assert whole.status_code == 200 and whole.content == bytes(range(100))
    assert whole.headers["content-type"] == "application/octet-stream"
    part = rest.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == bytes(range(10, 20))
    assert part.headers["content-range"] == "bytes 10-19/100"
    tail = rest.get(url, headers={"Range": "bytes=95-"})
    assert (
        tail.content == bytes(range(95, 100)) and tail.headers["content-range"] == "bytes 95-99/100"
    )
    past = rest.get(url, headers={"Range": "bytes=100-"})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */100"
    assert oneprovider.requests["content-get"] == 4


def test_children_pages(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    for name in ("c", "a", "e", "b", "d"):
        oneprovider.write("space1", f"dir/{name}", b"")
    folder = oneprovider.mkdir("space1", "dir")
    url = f"{API}/data/{folder}/children"
    first = rest.get(url, params={"limit": 3}).json()
    assert [c["name"] for c in first["children"]] == ["a", "b", "c"]
    assert set(first["children"][0]) == {"fileId", "name"} and first["isLast"] is False
    rest_of = rest.get(url, params={"limit": 3, "token": first["nextPageToken"]}).json()
    assert [c["name"] for c in rest_of["children"]] == ["d", "e"] and rest_of["isLast"] is True
    asked = rest.request("GET", url, json={"attributes": ["fileId", "size"]}).json()
    assert set(asked["children"][0]) == {"fileId", "size"}
    # the deprecated `attribute` takes the old snake_case names only, and answers in them
    old = rest.get(url, params=[("attribute", "file_id"), ("attribute", "size")]).json()
    assert set(old["children"][0]) == {"file_id", "size"}
    camel = rest.get(url, params={"attribute": "fileId"})
    assert camel.status_code == 400 and error(camel)["details"]["key"] == "attribute"
    empty = rest.get(f"{API}/data/{oneprovider.mkdir('space1', 'dir/none')}/children").json()
    assert empty == {"children": [], "isLast": True, "nextPageToken": None}
    too_many = rest.get(url, params={"limit": 1001})
    assert too_many.status_code == 400 and error(too_many)["id"] == "badValueTooHigh"


def test_an_unavailable_provider_answers_503(oneprovider: Oneprovider, rest: httpx.Client) -> None:
    oneprovider.unavailable = True
    down = rest.get(f"{API}/spaces")
    assert down.status_code == 503 and error(down)["id"] == "serviceUnavailable"
    oneprovider.unavailable = False
    assert rest.get(f"{API}/spaces").status_code == 200
    assert oneprovider.requests["spaces"] == 2


def test_tls_is_served_with_the_ca_file(tls_server: Oneprovider) -> None:
    assert tls_server.url.startswith("https://") and tls_server.ca_file is not None
    context = ssl.create_default_context(cafile=tls_server.ca_file)
    with httpx.Client(verify=context, headers={"X-Auth-Token": "t0ken"}) as c:
        assert c.get(f"{tls_server.url}{API}/spaces").status_code == 200
