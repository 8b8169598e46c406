"""Applying services: checked as a whole, nothing changes on error, tokens and secrets kept."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ondrop.errors import ConflictError, DefinitionError, LoopError, NotFoundError
from ondrop.fdl.models import Service
from ondrop.services import Services
from ondrop.storage import LocalStorage, Providers
from ondrop.store.sqlite import SQLiteStore


def svc(name: str, inp: str | None = None, out: str | None = None, **extra: Any) -> Service:
    data: dict[str, Any] = {"name": name, "script": "true", **extra}
    if inp:
        data["input"] = [{"path": inp}]
    if out:
        data["output"] = [{"path": out}]
    return Service.model_validate(data)


@pytest.fixture
def services(tmp_path: Path) -> Services:
    local = LocalStorage("local.default", tmp_path / "storage")
    providers = Providers({"local.default": local, "minio.default": local})
    return Services(SQLiteStore(tmp_path / "s.db"), providers, lambda s: (None, None))


def test_a_new_service_gets_a_64_hex_token(services: Services) -> None:
    applied = services.apply([svc("a", "a/in", "a/out")])
    assert applied.created == ["a"]
    token = services.get("a").token
    assert len(token) == 64 and int(token, 16) >= 0


def test_an_update_keeps_the_token_and_blank_secrets(services: Services) -> None:
    services.apply([svc("a", environment={"secrets": {"KEY": "value"}})])
    token = services.get("a").token
    applied = services.apply([svc("a", environment={"secrets": {"KEY": ""}})])
    assert applied.unchanged == ["a"]  # a secret sent back blank keeps its value
    applied = services.apply([svc("a", timeout=60, environment={"secrets": {"KEY": ""}})])
    assert applied.updated == ["a"] and applied.changes == {"a": ["timeout"]}
    assert services.get("a").token == token
    assert services.get("a").environment.secrets == {"KEY": "value"}


def test_services_survive_a_restart(tmp_path: Path, services: Services) -> None:
    services.apply([svc("a", "a/in")])
    again = Services(services.store, services.providers, lambda s: (None, None))
    assert again.get("a").input[0].path == "a/in"
    assert again.get("a").token == services.get("a").token


def test_a_chain_is_fine_and_a_loop_is_refused_naming_the_cycle(services: Services) -> None:
    services.apply([svc("a", "x/in", "x/mid"), svc("b", "x/mid", "x/out")])
    with pytest.raises(LoopError) as caught:
        services.apply([svc("c", "x/out", "x/in")])
    assert "a -> b -> c -> a" in str(caught.value)
    assert services.find("c") is None  # nothing changed


def test_a_loop_through_nested_folders_is_found(services: Services) -> None:
    with pytest.raises(LoopError):
        services.apply([svc("a", "x", "y/sub"), svc("b", "y", "x/deeper")])
    assert services.all() == []


def test_a_service_writing_into_its_own_input_is_not_a_loop(services: Services) -> None:
    services.apply([svc("self", "x/in", "x/in/processed")])
    assert services.get("self")


def test_an_unknown_provider_is_refused_and_changes_nothing(services: Services) -> None:
    bad = Service.model_validate(
        {
            "name": "a",
            "script": "true",
            "input": [{"storage_provider": "minio.nowhere", "path": "x"}],
        }
    )
    with pytest.raises(DefinitionError) as caught:
        services.apply([svc("ok", "ok/in"), bad])
    assert "storage provider 'minio.nowhere' is not defined" in str(caught.value)
    assert services.all() == []


def test_a_provider_type_this_platform_cannot_serve_is_refused(services: Services) -> None:
    rucio = Service.model_validate(
        {
            "name": "a",
            "script": "true",
            "input": [{"storage_provider": "rucio.mine", "path": "scope"}],
            "storage_providers": {"rucio": {"mine": {"host": "rucio.example"}}},
        }
    )
    with pytest.raises(DefinitionError) as caught:
        services.apply([rucio])
    assert "type 'rucio' is not available" in str(caught.value)


def test_a_onedata_provider_without_a_space_is_refused_saying_so(services: Services) -> None:
    onedata = Service.model_validate(
        {
            "name": "a",
            "script": "true",
            "input": [{"storage_provider": "onedata.mine", "path": "in"}],
            "storage_providers": {"onedata": {"mine": {"oneprovider_host": "op.example"}}},
        }
    )
    with pytest.raises(DefinitionError, match=r"onedata.mine.*space is required"):
        services.apply([onedata])


def test_a_declared_local_provider_is_created_and_usable(
    services: Services, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere"
    services.apply(
        [
            Service.model_validate(
                {
                    "name": "a",
                    "script": "true",
                    "input": [{"storage_provider": "local.disk", "path": "in"}],
                    "storage_providers": {"local": {"disk": {"path": str(folder)}}},
                }
            )
        ]
    )
    assert services.providers.resolve("local.disk") == "local.disk"
    assert services.targets("local.disk", "in/file.txt") == ["a"]
    assert folder.is_dir()


def test_a_provider_declared_by_one_service_serves_the_others_applied_with_it(
    services: Services, tmp_path: Path
) -> None:
    folder = tmp_path / "shared-disk"
    declares = Service.model_validate(
        {
            "name": "a",
            "script": "true",
            "input": [{"storage_provider": "local.disk", "path": "in"}],
            "output": [{"storage_provider": "local.disk", "path": "mid"}],
            "storage_providers": {"local": {"disk": {"path": str(folder)}}},
        }
    )
    uses = Service.model_validate(
        {
            "name": "b",
            "script": "true",
            "input": [{"storage_provider": "local.disk", "path": "mid"}],
        }
    )
    services.apply([declares, uses])
    assert services.targets("local.disk", "mid/file.txt") == ["b"]
    assert (folder / "mid").is_dir()


def test_targets_follow_folders_and_file_name_filters(services: Services) -> None:
    services.apply(
        [
            svc("all", "photos"),
            Service.model_validate(
                {
                    "name": "png",
                    "script": "true",
                    "input": [{"path": "photos/in", "suffix": [".png"], "prefix": ["cat"]}],
                }
            ),
        ]
    )
    assert services.targets("local.default", "photos/in/cat1.png") == ["all", "png"]
    assert services.targets("local.default", "photos/in/dog1.png") == ["all"]
    assert services.targets("local.default", "photos/in/cat1.jpg") == ["all"]
    assert services.targets("local.default", "photosynthesis/x.png") == []
    assert services.targets("memory.other", "photos/in/cat1.png") == []


def test_create_and_update_modes_check_existence(services: Services) -> None:
    services.apply([svc("a")], mode="create")
    with pytest.raises(ConflictError):
        services.apply([svc("a")], mode="create")
    with pytest.raises(NotFoundError):
        services.apply([svc("b")], mode="update")


def test_the_run_check_can_refuse_or_warn(tmp_path: Path, services: Services) -> None:
    checks = Services(
        services.store,
        services.providers,
        lambda s: ("no GPUs here", None) if s.gpu else (None, "heads up"),
    )
    with pytest.raises(DefinitionError) as caught:
        checks.apply([svc("g", gpu=1)])
    assert "service 'g': no GPUs here" in str(caught.value)
    assert checks.apply([svc("w")]).warnings == ["service 'w': heads up"]


def test_delete_forgets_a_service(services: Services) -> None:
    services.apply([svc("a")])
    services.delete("a")
    with pytest.raises(NotFoundError):
        services.get("a")
    with pytest.raises(NotFoundError):
        services.delete("a")


def local_disk(name: str, folder: Path) -> Service:
    return Service.model_validate(
        {
            "name": name,
            "script": "true",
            "input": [{"storage_provider": "local.disk", "path": "in"}],
            "storage_providers": {"local": {"disk": {"path": str(folder)}}},
        }
    )


def test_a_provider_declared_wrongly_can_be_fixed_by_applying_again(
    services: Services, tmp_path: Path
) -> None:
    services.apply([local_disk("a", tmp_path / "first")])
    services.apply([local_disk("a", tmp_path / "second")])
    provider = services.providers.get("local.disk")
    assert isinstance(provider, LocalStorage) and provider.root == (tmp_path / "second")


def test_two_services_cannot_declare_one_provider_two_ways(
    services: Services, tmp_path: Path
) -> None:
    services.apply([local_disk("a", tmp_path / "first")])
    with pytest.raises(DefinitionError) as caught:
        services.apply([local_disk("b", tmp_path / "second")])
    assert "declared with other settings by service 'a'" in str(caught.value)
    assert services.find("b") is None


def test_a_change_made_by_another_control_plane_is_read_on_refresh(tmp_path: Path) -> None:
    local = LocalStorage("local.default", tmp_path / "storage")
    providers = Providers({"local.default": local, "minio.default": local})
    here = Services(SQLiteStore(tmp_path / "s.db"), providers, lambda s: (None, None))
    there = Services(SQLiteStore(tmp_path / "s.db"), providers, lambda s: (None, None))
    assert not there.refresh()  # nothing changed since it read them
    here.apply([svc("a", "a/in", "a/out")])
    assert there.find("a") is None  # not read yet: its cache is its own
    assert there.refresh()
    assert there.get("a").token == here.get("a").token
    assert there.targets("local.default", "a/in/x.txt") == ["a"]
    assert not there.refresh()
    here.delete("a")
    assert there.refresh() and there.find("a") is None
    assert there.targets("local.default", "a/in/x.txt") == []


def test_two_control_planes_applying_at_once_cannot_together_make_a_loop(
    tmp_path: Path,
) -> None:
    local = LocalStorage("local.default", tmp_path / "storage")
    providers = Providers({"local.default": local, "minio.default": local})
    both_checked = threading.Barrier(2)

    def check(service: Service) -> tuple[str | None, str | None]:
        both_checked.wait(timeout=30)  # each has checked its own service before either saves
        return None, None

    here = Services(SQLiteStore(tmp_path / "s.db"), providers, check)
    there = Services(SQLiteStore(tmp_path / "s.db"), providers, check)
    outcomes: dict[str, str] = {}

    def apply(name: str, services: Services, inp: str, out: str) -> None:
        try:
            services.apply([svc(name, inp, out)])
            outcomes[name] = "applied"
        except LoopError:
            outcomes[name] = "loop"

    threads = [
        threading.Thread(target=apply, args=("a", here, "x/in", "x/mid")),
        threading.Thread(target=apply, args=("b", there, "x/mid", "x/in")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["applied", "loop"]
    here.refresh()
    assert [s.name for s in here.all()] == [n for n, o in outcomes.items() if o == "applied"]


def test_an_apply_checks_against_the_services_another_control_plane_saved(
    tmp_path: Path,
) -> None:
    local = LocalStorage("local.default", tmp_path / "storage")
    providers = Providers({"local.default": local, "minio.default": local})
    here = Services(SQLiteStore(tmp_path / "s.db"), providers, lambda s: (None, None))
    there = Services(SQLiteStore(tmp_path / "s.db"), providers, lambda s: (None, None))
    here.apply([svc("a", "x/in", "x/mid")])
    assert there.find("a") is None  # its cache has not been refreshed
    with pytest.raises(LoopError, match=r"a -> b -> a|b -> a -> b"):
        there.apply([svc("b", "x/mid", "x/in")])
    with pytest.raises(ConflictError, match="already exists"):
        there.apply([svc("a", "y/in")], mode="create")


def test_upstream_names_what_feeds_a_service_through_folders_and_collection(
    services: Services,
) -> None:
    services.apply(
        [
            svc("split", "v/in", "v/frames"),
            svc("detect", "v/frames", "v/found"),
            svc("summary", None, "v/summary", collect="detect"),
            svc("other", "o/in", "o/out"),
        ]
    )
    assert services.upstream("detect") == ["split"]
    assert services.upstream("summary") == ["detect", "split"]
    assert services.upstream("split") == [] and services.upstream("other") == []
