"""The bundled object store listens on the address it is given (ONDROP_OBJECT_STORE_HOST),
so that the nodes of a cluster reach it, and serves S3 there (SeaweedFS also answers on
127.0.0.1, for the platform's own use)."""

from __future__ import annotations

import io
from pathlib import Path

from ondrop.storage import build
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
