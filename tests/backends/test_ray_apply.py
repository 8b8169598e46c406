"""A service whose jobs may run on a cluster must keep its files where the nodes reach
them: a folder of this machine is refused at apply, saying which and what to use, unless
it is declared shared (the same path on every node); nothing is applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ondrop.errors import DefinitionError
from ondrop.fdl.models import Service
from ondrop.platform import Platform
from ondrop.settings import Settings


def service(provider: str, **extra: Any) -> Service:
    return Service.model_validate(
        {
            "name": "far",
            "script": "true",
            "input": [{"storage_provider": provider, "path": "in"}],
            **extra,
        }
    )


@pytest.mark.parametrize("backend", [{"backend": "ray"}, {"batch_backend": "ray"}])
def test_a_local_folder_is_refused_for_jobs_on_a_cluster_unless_shared(
    backend: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings.load(
        overrides={"data": tmp_path / "data", "ray_address": "127.0.0.2:9", **backend},
        environ={},
    )
    platform = Platform(settings)  # not started: apply needs no cluster
    try:
        for provider in ("local.default", "minio.default"):  # minio.default is a folder here
            with pytest.raises(DefinitionError) as refused:
                platform.apply([service(provider, mode="batch")])
            message = str(refused.value)
            assert "folder on this machine" in message and "shared: true" in message
            assert "--object-store seaweedfs" in message
        assert platform.services.all() == []
        shared = tmp_path / "shared"
        declared = {"local": {"nfs": {"path": str(shared), "shared": True}}}
        applied = platform.apply([service("local.nfs", mode="batch", storage_providers=declared)])
        assert applied.created == ["far"]
        if "batch_backend" in backend:  # faas stays local: a local folder is fine there
            assert platform.apply([service("local.default", mode="faas")]).updated == ["far"]
    finally:
        platform.store.close()
