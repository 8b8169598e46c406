"""What a user reads when a store says no: which provider, what went wrong, what to do;
and whether the platform should wait and retry (store down) or give up (wrong keys)."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ondrop.errors import InvalidKeyError, StorageError, StorageUnavailableError
from ondrop.storage import build
from tests.support.servers import S3Server, WebDAV, free_port


def test_wrong_s3_keys_name_the_provider_and_the_fix(seaweedfs: S3Server) -> None:
    store = build("minio.wrong", {**seaweedfs.provider_config(), "secret_key": "nope"})
    with pytest.raises(StorageError) as caught:
        store.put("somebucket/x.txt", io.BytesIO(b"x"))
    message = str(caught.value)
    assert message.startswith("minio.wrong (http://127.0.0.1:")
    assert "refused the credentials" in message and "check access_key and secret_key" in message
    assert not isinstance(caught.value, StorageUnavailableError)
    assert "nope" not in message  # no secret in messages
    store.close()


def test_a_missing_bucket_says_so(seaweedfs: S3Server) -> None:
    store = build("minio.x", seaweedfs.provider_config())
    with pytest.raises(StorageError) as caught:
        store.put("no-such-bucket-here/x.txt", io.BytesIO(b"x"))
    assert "the bucket does not exist" in str(caught.value)
    with pytest.raises(InvalidKeyError):
        store.put("justabucket", io.BytesIO(b"x"))
    store.close()


def test_a_store_that_is_down_is_unavailable_not_failed() -> None:
    port = free_port()  # nothing listens there
    s3 = build(
        "minio.down", {"endpoint": f"http://127.0.0.1:{port}", "access_key": "a", "secret_key": "b"}
    )
    with pytest.raises(StorageUnavailableError) as caught:
        s3.stat("bucket/x")
    assert "cannot reach the store" in str(caught.value) and "retry" in str(caught.value)
    dav = build("webdav.down", {"hostname": f"http://127.0.0.1:{port}"})
    with pytest.raises(StorageUnavailableError):
        list(dav.list("x"))
    s3.close()
    dav.close()


class Failing(http.server.BaseHTTPRequestHandler):
    """A store that answers every request with S3's 500 InternalError."""

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"<Error><Code>InternalError</Code><Message>try again</Message></Error>"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _fail

    def log_message(self, *args: object) -> None:
        pass


def test_a_store_failing_inside_is_unavailable_for_uploads_too(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3 = build(
        "minio.failing",
        {
            "endpoint": f"http://127.0.0.1:{server.server_port}",
            "access_key": "a",
            "secret_key": "b",
        },
    )
    output = tmp_path / "x.txt"
    output.write_text("x")
    try:
        calls: list[Callable[[], object]] = [
            lambda: s3.put("bucket/x.txt", io.BytesIO(b"x")),
            lambda: s3.put_file("bucket/x.txt", output),  # boto3 wraps the store's answer
            lambda: s3.stat("bucket/x.txt"),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailableError) as caught:
                call()
            assert "minio.failing" in str(caught.value) and "retry" in str(caught.value)
    finally:
        s3.close()
        server.shutdown()
        server.server_close()


def test_wrong_webdav_credentials_name_the_fix(webdav: WebDAV, tmp_path: Path) -> None:
    dav = build("webdav.w", {"hostname": webdav.url, "login": webdav.user, "password": "bad"})
    with pytest.raises(StorageError) as caught:
        dav.stat("x/y.txt")
    assert "webdav.w" in str(caught.value) and "check login and password" in str(caught.value)
    dav.close()
