"""onedata.<id> beyond the storage contract: content in pieces and ranges, listings in
pages, and errors that say what is wrong (a token, a space, a provider out of reach)."""

from __future__ import annotations

import io
import os

import pytest

from ondrop.errors import StorageError, StorageUnavailableError
from ondrop.storage import build
from ondrop.storage import onedata as onedata_module
from ondrop.storage.onedata import OnedataStorage
from tests.support.oneprovider import Oneprovider


def space(server: Oneprovider, **config: object) -> OnedataStorage:
    settings = {"oneprovider_host": server.url, "token": "t0ken", "space": "space1", **config}
    provider = build("onedata.test", settings)
    assert isinstance(provider, OnedataStorage)
    return provider


def test_large_content_is_written_in_pieces_and_read_in_ranges(
    oneprovider: Oneprovider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onedata_module, "PIECE", 1000)
    data = os.urandom(4500)
    with space(oneprovider) as provider:
        info = provider.put("big/data.bin", io.BytesIO(data))
        assert info.size == 4500 and oneprovider.read("space1", "big/data.bin") == data
        reads = oneprovider.requests["content-get"]
        with provider.open("big/data.bin") as f:
            assert f.read() == data
        assert oneprovider.requests["content-get"] - reads == 5  # five ranges of 1000 bytes
        # nothing of the upload's temporary name is left in the space
        assert [o.key for o in provider.list("big")] == ["big/data.bin"]


def test_a_listing_follows_every_page(
    oneprovider: Oneprovider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onedata_module, "PAGE", 2)
    for i in range(5):
        oneprovider.write("space1", f"in/f{i}.txt", b"x" * i)
    oneprovider.write("space1", "in/.partial", b"hidden from no one, but a temporary name")
    oneprovider.mkdir("space1", "in/empty")
    with space(oneprovider) as provider:
        listed = list(provider.list("in"))
    assert [(o.key, o.size) for o in listed if not o.key.endswith(".partial")] == [
        (f"in/f{i}.txt", i) for i in range(5)
    ]
    assert oneprovider.requests["children"] >= 3


def test_a_space_may_be_named_by_its_id(oneprovider: Oneprovider) -> None:
    oneprovider.write("space1", "a.txt", b"by id")
    with space(oneprovider) as by_name:
        space_id = by_name.space_id
    with space(oneprovider, space=space_id) as by_id:
        assert by_id.space_name == "space1"
        with by_id.open("a.txt") as f:
            assert f.read() == b"by id"


def test_a_put_again_is_a_new_version_even_with_the_same_size(oneprovider: Oneprovider) -> None:
    with space(oneprovider) as provider:
        first = provider.put("v.txt", io.BytesIO(b"aaa"))
        second = provider.put("v.txt", io.BytesIO(b"bbb"))
        assert first.version != second.version
        assert provider.stat("v.txt") == second


def test_a_refused_token_says_so(oneprovider: Oneprovider) -> None:
    with (
        space(oneprovider, token="wrong") as provider,
        pytest.raises(StorageError, match="refused the token"),
    ):
        provider.ensure_folder("in")


def test_a_space_that_does_not_exist_names_the_spaces_the_token_sees(
    oneprovider: Oneprovider,
) -> None:
    with (
        space(oneprovider, space="nowhere") as provider,
        pytest.raises(StorageError, match=r"'nowhere' does not exist.*sees: space1"),
    ):
        provider.ensure_folder("in")


def test_a_provider_out_of_reach_is_unavailable_so_jobs_wait(oneprovider: Oneprovider) -> None:
    with space(oneprovider) as provider:
        provider.put("x.txt", io.BytesIO(b"1"))
        oneprovider.unavailable = True
        with pytest.raises(StorageUnavailableError, match="jobs wait and retry"):
            provider.stat("x.txt")
        oneprovider.unavailable = False
        assert provider.stat("x.txt") is not None
    gone = Oneprovider()
    with gone:
        url = gone.url
    with (
        space(oneprovider, oneprovider_host=url) as provider,
        pytest.raises(StorageUnavailableError, match="cannot reach the Oneprovider"),
    ):
        provider.stat("x.txt")


def test_the_host_alone_means_https_as_in_oscar() -> None:
    provider = OnedataStorage("onedata.x", "provider.example.org", "t", "s")
    assert provider.origin == "https://provider.example.org"
    provider.close()


def test_paths_in_change_records_may_name_the_space_by_id_or_by_name(
    oneprovider: Oneprovider,
) -> None:
    with space(oneprovider) as provider:
        assert provider.key_of(f"/{provider.space_id}/in/a.txt") == "in/a.txt"
        assert provider.key_of("/space1/in/a.txt") == "in/a.txt"
        assert provider.key_of("/another-space/in/a.txt") is None


def test_a_path_under_a_file_is_no_object(oneprovider: Oneprovider) -> None:
    oneprovider.write("space1", "file.txt", b"1")
    with space(oneprovider) as provider:
        assert provider.stat("file.txt/x") is None
