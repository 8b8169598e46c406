"""The StorageProvider contract, run on every implementation against a real server where
there is one: local folders, the in-memory double, WebDAV (wsgidav), S3 (SeaweedFS) and
Onedata (the Oneprovider test server of tests/support/oneprovider.py: no real one runs here).
A provider is done when it passes this suite."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from ondrop.errors import InvalidKeyError, NotFoundError
from ondrop.storage import LocalStorage, MemoryStorage, StorageProvider, build

KINDS = ["local", "memory", "webdav", "s3", "onedata"]


@pytest.fixture(params=KINDS)
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageProvider]:
    if request.param == "local":
        yield LocalStorage("local.test", tmp_path / "root")
    elif request.param == "memory":
        yield MemoryStorage("memory.test")
    elif request.param == "webdav":
        dav = request.getfixturevalue("webdav")
        store = build(
            "webdav.test", {"hostname": dav.url, "login": dav.user, "password": dav.password}
        )
        yield store
        store.close()
    elif request.param == "onedata":
        server = request.getfixturevalue("oneprovider")
        store = build(
            "onedata.test",
            {"oneprovider_host": server.url, "token": "t0ken", "space": "space1"},
        )
        yield store
        store.close()
    else:
        s3 = request.getfixturevalue("seaweedfs")
        store = build("minio.test", s3.provider_config())
        yield store
        store.close()


@pytest.fixture
def root(provider: StorageProvider) -> str:
    """A fresh top folder (a bucket on S3) for the test's objects."""
    name = f"t{uuid.uuid4().hex[:10]}"
    provider.ensure_folder(name)
    return name


def put(provider: StorageProvider, key: str, data: bytes) -> None:
    provider.put(key, io.BytesIO(data))


def test_what_is_put_can_be_read_back_whole(
    provider: StorageProvider, root: str, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20) * 20  # 20 MiB: several chunks, multipart on S3
    info = provider.put(f"{root}/b/c.bin", io.BytesIO(data))
    assert (info.key, info.size) == (f"{root}/b/c.bin", len(data))
    with provider.open(f"{root}/b/c.bin") as f:
        assert f.read() == data
    got = provider.get(f"{root}/b/c.bin", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert got.version == info.version
    source = tmp_path / "source.bin"
    source.write_bytes(data[:100_000])
    assert provider.put_file(f"{root}/from-file.bin", source).size == 100_000


class Stream(io.RawIOBase):
    """Bytes that can be read once, in order, as from a request's body: no seek, no size."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 17 << 20])
def test_a_stream_that_cannot_seek_is_stored_whole_at_any_size(
    provider: StorageProvider, root: str, size: int
) -> None:
    """Around the size under which S3 sends an object in one request, and over the one
    from which it sends it in parts."""
    data = os.urandom(size)
    info = provider.put(f"{root}/s.bin", cast(BinaryIO, io.BufferedReader(Stream(data))))
    assert info.size == size
    with provider.open(f"{root}/s.bin") as f:
        assert f.read() == data


def test_stat_describes_an_object_and_none_for_a_missing_one(
    provider: StorageProvider, root: str
) -> None:
    put(provider, f"{root}/x/y.txt", b"hello")
    info = provider.stat(f"{root}/x/y.txt")
    assert info is not None and info.size == 5 and info.version
    assert provider.stat(f"{root}/x/nothing.txt") is None
    assert provider.stat(f"{root}/x") is None  # a folder is not an object


def test_list_is_recursive_sorted_and_limited_to_the_folder(
    provider: StorageProvider, root: str
) -> None:
    for key in ["in/b.txt", "in/a.txt", "in/sub/c.txt", "inside.txt", "out/d.txt"]:
        put(provider, f"{root}/{key}", b"1")
    assert [o.key for o in provider.list(f"{root}/in")] == [
        f"{root}/in/a.txt",
        f"{root}/in/b.txt",
        f"{root}/in/sub/c.txt",
    ]
    assert len(list(provider.list(root))) == 5
    assert list(provider.list(f"{root}/nowhere")) == []


def test_folders_are_the_top_ones_and_remove_folder_empties_one(
    provider: StorageProvider, root: str
) -> None:
    """The buckets of /system/buckets."""
    for key in ["a.txt", "in/b.txt", "in/sub/c.txt"]:
        put(provider, f"{root}/{key}", b"1")
    assert root in provider.folders()
    assert all("/" not in name for name in provider.folders())
    assert provider.remove_folder(root) == 3
    assert root not in provider.folders()  # and no object of it is listed any more
    assert not any(o.key.startswith(f"{root}/") for o in provider.list())
    assert provider.remove_folder(root) == 0  # gone already: quiet


def test_a_new_content_gets_a_new_version(provider: StorageProvider, root: str) -> None:
    first = provider.put(f"{root}/v.txt", io.BytesIO(b"one"))
    second = provider.put(f"{root}/v.txt", io.BytesIO(b"three"))
    assert first.version != second.version
    with provider.open(f"{root}/v.txt") as f:
        assert f.read() == b"three"


def test_delete_removes_and_is_quiet_when_already_gone(
    provider: StorageProvider, root: str
) -> None:
    put(provider, f"{root}/gone.txt", b"1")
    provider.delete(f"{root}/gone.txt")
    provider.delete(f"{root}/gone.txt")
    assert provider.stat(f"{root}/gone.txt") is None
    with pytest.raises(NotFoundError):
        provider.open(f"{root}/gone.txt")


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
        "a/.ondrop-tmp",
    ],
)
def test_unsafe_keys_are_refused_before_anything_is_touched(
    provider: StorageProvider, root: str, key: str
) -> None:
    with pytest.raises(InvalidKeyError):
        put(provider, key, b"x")
    with pytest.raises(InvalidKeyError):
        provider.stat(key)
    assert list(provider.list(root)) == []
