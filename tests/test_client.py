"""The Python client: applies an FDL file, a service or a list; reprocesses; waits for
the work its uploads started, down the chain; raises the error of each kind with the
platform's message. On its own: a download that stops half-way leaves no file under the
real name (nor a half-written one beside it), and a file already there untouched."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.client import Client
from ondrop.errors import (
    ClientAuthError,
    ClientConflictError,
    ClientError,
    ClientNotFoundError,
    ClientRequestError,
    ClientUnavailableError,
    DefinitionError,
)
from ondrop.platform import Platform
from tests.conftest import ADMIN

FDL = """
functions:
  oscar:
  - local:
      name: shout
      script: shout.sh
      input: [{storage_provider: minio, path: shout/in}]
      output: [{storage_provider: minio, path: shout/out}]
"""
SHOUT = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
ECHO = {
    "name": "echo",
    "script": 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"',
    "input": [{"storage_provider": "minio", "path": "shout/out"}],
    "output": [{"storage_provider": "minio", "path": "echo/out"}],
}


@pytest.fixture
def client(base_url: str) -> Iterator[Client]:
    with Client(base_url, ADMIN.user, ADMIN.password) as c:
        yield c


def test_apply_takes_an_fdl_file_a_service_or_a_list_and_says_what_changed(
    client: Client, platform: Platform, tmp_path: Path
) -> None:
    (tmp_path / "shout.sh").write_text(SHOUT)
    (tmp_path / "shout.yaml").write_text(FDL)
    inbox = platform.data / "storage" / "shout" / "in"
    inbox.mkdir(parents=True)
    (inbox / "early.txt").write_text("early")
    first = client.apply(tmp_path / "shout.yaml")
    assert first["created"] == ["shout"] and first["left_alone"] == {"shout": 1}
    assert client.apply(str(tmp_path / "shout.yaml"))["unchanged"] == ["shout"]
    assert client.apply(ECHO)["created"] == ["echo"]
    changed = client.apply([{**ECHO, "timeout": 60}])
    assert changed["updated"] == ["echo"] and changed["changes"] == {"echo": ["timeout"]}
    # The same service from another file: applied, and said so.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "shout.sh").write_text(SHOUT + " # louder")
    (tmp_path / "other" / "shout.yaml").write_text(FDL)
    moved = client.apply(tmp_path / "other" / "shout.yaml")
    assert moved["changes"] == {"shout": ["script"]}
    assert any(f"came from {tmp_path / 'shout.yaml'}" in w for w in moved["warnings"])
    # The file left alone gets its job, once; its output starts echo: wait follows both.
    started = client.reprocess("shout")
    assert [j["input"] for j in started["jobs"]] == ["shout/in/early.txt"]
    assert client.reprocess("shout") == {"jobs": [], "already": 1}
    ended = client.wait([j["job"] for j in started["jobs"]], timeout=60)
    assert [(s["service"], s["jobs"]["succeeded"]) for s in ended["stages"]] == [
        ("shout", 1),
        ("echo", 1),
    ]
    assert (platform.data / "storage" / "echo" / "out" / "early.txt").read_text() == "EARLY"


def test_a_file_that_builds_images_is_left_to_the_cli(client: Client, tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    (tmp_path / "b.yaml").write_text("services:\n- name: b\n  script: 'true'\n  build: .\n")
    with pytest.raises(DefinitionError, match=r"builds images \(b\): apply it with `ondrop apply`"):
        client.apply(tmp_path / "b.yaml")


def test_each_kind_of_error_is_its_own_class_with_the_platforms_message(
    client: Client, base_url: str
) -> None:
    with pytest.raises(ClientNotFoundError, match="no service named 'nope'") as missing:
        client.service("nope")
    assert missing.value.status_code == 404
    with pytest.raises(ClientRequestError, match="services\\[0\\]"):
        client.apply([{"name": "Bad Name!"}])
    client.apply(ECHO)
    with pytest.raises(ClientConflictError, match="already exists"):
        client._request("POST", "/system/services", json=ECHO)
    with Client(base_url, ADMIN.user, "wrong") as wrong, pytest.raises(ClientAuthError) as auth:
        wrong.services()
    assert "wrong password" in str(auth.value)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", "admin", "pw") as gone,
        pytest.raises(ClientUnavailableError, match="cannot reach the platform"),
    ):
        gone.services()
    assert all(
        issubclass(k, ClientError)
        for k in (ClientAuthError, ClientNotFoundError, ClientConflictError, ClientRequestError)
    )


@pytest.fixture
def cut_short() -> Iterator[str]:
    """A server that promises 1 MB, sends 10 bytes and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n0123456789"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
    listener.close()
    thread.join(timeout=10)


def test_an_interrupted_download_leaves_nothing_under_the_real_name(
    cut_short: str, tmp_path: Path
) -> None:
    client = Client(cut_short, "admin", "pw")
    fresh = tmp_path / "fresh.bin"
    with pytest.raises(ClientError, match=r"download from .* failed"):
        client.download("minio.default", "out/fresh.bin", fresh)
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"the previous download")
    with pytest.raises(ClientError):
        client.download("minio.default", "out/kept.bin", kept)
    assert kept.read_bytes() == b"the previous download"
    assert list(tmp_path.iterdir()) == [kept]
    client.close()


def test_upload_many_sends_the_files_in_one_tar_and_wait_follows_them(
    client: Client, platform: Platform, tmp_path: Path
) -> None:
    (tmp_path / "shout.sh").write_text(SHOUT)
    (tmp_path / "shout.yaml").write_text(FDL)
    client.apply(tmp_path / "shout.yaml")
    paths = []
    for name in ("a.txt", "b.txt", "c" * 120 + ".txt"):  # a name longer than ustar's 100
        (tmp_path / name).write_text(name[:1] * 700)  # more than one 512-byte block
        paths.append(tmp_path / name)
    moved: list[int] = []
    answer = client.upload_many("minio.default", "shout/in", paths, moved.append)
    assert sum(moved) == 2100
    assert [o["key"] for o in answer["objects"]] == [f"shout/in/{p.name}" for p in paths]
    ended = client.wait([j["job"] for o in answer["objects"] for j in o["jobs"]], timeout=60)
    assert ended["stages"][0]["jobs"]["succeeded"] == 3
    out = platform.data / "storage" / "shout" / "out"
    assert (out / paths[2].name).read_text() == "C" * 700
