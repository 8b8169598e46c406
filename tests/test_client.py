"""The Python client on its own: a download that stops half-way leaves no file under the
real name (nor a half-written one beside it), and a file already there untouched."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.client import Client
from ondrop.errors import ClientError


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
