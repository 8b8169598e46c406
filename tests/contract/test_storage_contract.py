"""The StorageProvider contract, run on every implementation. A provider is done when it
passes this suite."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.errors import InvalidKeyError, NotFoundError
from ondrop.storage import LocalStorage, MemoryStorage, StorageProvider


@pytest.fixture(params=["local", "memory"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageProvider]:
    if request.param == "local":
        yield LocalStorage("local.test", tmp_path / "root")
    else:
        yield MemoryStorage("memory.test")


def put(provider: StorageProvider, key: str, data: bytes) -> None:
    provider.put(key, io.BytesIO(data))


def test_what_is_put_can_be_read_back_whole(provider: StorageProvider, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # over a megabyte: more than one chunk
    info = provider.put("a/b/c.bin", io.BytesIO(data))
    assert (info.key, info.size) == ("a/b/c.bin", len(data))
    with provider.open("a/b/c.bin") as f:
        assert f.read() == data
    got = provider.get("a/b/c.bin", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert got.version == info.version


def test_stat_describes_an_object_and_none_for_a_missing_one(provider: StorageProvider) -> None:
    put(provider, "x/y.txt", b"hello")
    info = provider.stat("x/y.txt")
    assert info is not None and info.size == 5 and info.version
    assert provider.stat("x/nothing.txt") is None
    assert provider.stat("x") is None  # a folder is not an object


def test_list_is_recursive_sorted_and_limited_to_the_folder(provider: StorageProvider) -> None:
    for key in ["in/b.txt", "in/a.txt", "in/sub/c.txt", "inside.txt", "out/d.txt"]:
        put(provider, key, b"1")
    assert [o.key for o in provider.list("in")] == ["in/a.txt", "in/b.txt", "in/sub/c.txt"]
    assert len(list(provider.list())) == 5
    assert list(provider.list("nowhere")) == []


def test_a_new_content_gets_a_new_version(provider: StorageProvider) -> None:
    first = provider.put("v.txt", io.BytesIO(b"one"))
    second = provider.put("v.txt", io.BytesIO(b"three"))
    assert first.version != second.version
    with provider.open("v.txt") as f:
        assert f.read() == b"three"


def test_delete_removes_and_is_quiet_when_already_gone(provider: StorageProvider) -> None:
    put(provider, "gone.txt", b"1")
    provider.delete("gone.txt")
    provider.delete("gone.txt")
    assert provider.stat("gone.txt") is None
    with pytest.raises(NotFoundError):
        provider.open("gone.txt")


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/abs/path",
        "a/../../b",
        "a//b",
        "nul\x00byte",
        "tab\tname",
        "back\\slash",
        "",
        "a/./b",
        ".ondrop-tmp",
    ],
)
def test_unsafe_keys_are_refused_before_anything_is_touched(
    provider: StorageProvider, key: str
) -> None:
    with pytest.raises(InvalidKeyError):
        put(provider, key, b"x")
    with pytest.raises(InvalidKeyError):
        provider.stat(key)
    assert list(provider.list()) == []
