"""Local storage opens what it checked: no read, stat or write under a `local.<id>` root
follows a link, wherever the link is along the key and whatever it points to."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.errors import InvalidKeyError, NotFoundError, StorageError
from ondrop.storage import beneath
from ondrop.storage.local import LINK, LocalStorage, Refused

NEVER = "links are never followed"


@pytest.fixture(params=["openat2", "walk"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStorage]:
    """Both ways of resolving a key: the kernel's openat2, and the walk from the root one
    component at a time that kernels without it get."""
    if request.param == "walk":
        monkeypatch.setattr(beneath, "SYS_OPENAT2", None)
    store = LocalStorage("local.test", tmp_path / "root")
    if store.resolver != request.param:
        pytest.skip("this kernel has no openat2")
    yield store


@pytest.fixture
def elsewhere(storage: LocalStorage, tmp_path: Path) -> Path:
    """A folder of someone else's: another service's outputs inside the root."""
    storage.put("other/out/result.txt", io.BytesIO(b"another service's output"))
    return storage.root / "other" / "out"


@pytest.mark.parametrize("outside", [False, True], ids=["inside-the-root", "outside-it"])
def test_a_linked_folder_in_a_key_is_refused_for_get_stat_put_and_delete(
    storage: LocalStorage, elsewhere: Path, tmp_path: Path, outside: bool
) -> None:
    target = elsewhere
    if outside:
        target = tmp_path / "host"
        target.mkdir()
        (target / "result.txt").write_bytes(b"a host file")
    before = (target / "result.txt").read_bytes()
    (storage.root / "in").mkdir()
    (storage.root / "in" / "sub").symlink_to(target)
    key = "in/sub/result.txt"
    assert storage.stat(key) is None
    with pytest.raises(StorageError, match=NEVER):
        storage.get(key, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    with pytest.raises(StorageError, match=NEVER):
        storage.open(key)
    with pytest.raises(StorageError, match=NEVER):
        storage.put("in/sub/planted.txt", io.BytesIO(b"planted"))
    with pytest.raises(StorageError, match=NEVER):
        storage.put_file("in/sub/result.txt", _file(tmp_path), move=True)
    with pytest.raises(StorageError, match=NEVER):
        storage.delete(key)
    with pytest.raises(StorageError, match=NEVER):
        storage.ensure_folder("in/sub/deeper")
    with pytest.raises(StorageError, match=NEVER):
        list(storage.list("in/sub"))
    assert list(storage.list("in")) == []
    assert sorted(os.listdir(target)) == ["result.txt"]
    assert (target / "result.txt").read_bytes() == before


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"an upload")
    return path


@pytest.mark.parametrize("outside", [False, True], ids=["inside-the-root", "outside-it"])
def test_a_link_as_the_object_itself_is_never_read_whatever_it_points_to(
    storage: LocalStorage, elsewhere: Path, tmp_path: Path, outside: bool
) -> None:
    target = elsewhere / "result.txt"
    if outside:
        target = tmp_path / "secret"
        target.write_bytes(b"root only")
        target.chmod(0o600)
    before = target.read_bytes()
    (storage.root / "in").mkdir()
    (storage.root / "in" / "link").symlink_to(target)
    assert storage.stat("in/link") is None
    with pytest.raises(StorageError, match=f"is {LINK}"):
        storage.get("in/link", tmp_path / "copy")
    with pytest.raises(StorageError, match=f"is {LINK}"):
        storage.open("in/link")
    assert list(storage.list("in")) == []
    (refused,) = storage.scan("in")
    assert isinstance(refused, Refused) and refused.key == "in/link" and refused.reason == LINK
    assert storage.entry("in/link") == refused
    # Writing over the link replaces the link; deleting it removes the link: never the target.
    storage.put("in/link", io.BytesIO(b"new object"))
    assert (storage.root / "in" / "link").read_bytes() == b"new object"
    assert not (storage.root / "in" / "link").is_symlink()
    (storage.root / "in" / "link2").symlink_to(target)
    storage.delete("in/link2")
    assert not os.path.lexists(storage.root / "in" / "link2")
    assert target.read_bytes() == before


def test_the_same_link_has_one_version_and_another_target_another(
    storage: LocalStorage, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    link = storage.root / "in" / "link"
    link.symlink_to("a")
    first = storage.entry("in/link")
    link.unlink()
    link.symlink_to("a")
    again = storage.entry("in/link")
    link.unlink()
    link.symlink_to("b")
    other = storage.entry("in/link")
    assert isinstance(first, Refused) and isinstance(again, Refused) and isinstance(other, Refused)
    assert first.version == again.version != other.version
    assert not first.version.startswith(tuple("0123456789"))  # never a file's size-mtime


def test_a_fifo_is_no_object_and_reading_it_never_blocks(
    storage: LocalStorage, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    os.mkfifo(storage.root / "in" / "pipe")
    assert storage.stat("in/pipe") is None
    assert storage.entry("in/pipe") is None
    assert list(storage.scan("in")) == []
    done = threading.Event()

    def read() -> None:
        with pytest.raises(StorageError, match="not a file"):
            storage.get("in/pipe", tmp_path / "copy")
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if not done.is_set():  # unblock the reader so the test ends either way
        os.close(os.open(storage.root / "in" / "pipe", os.O_WRONLY | os.O_NONBLOCK))
    assert done.is_set()


def test_objects_are_stat_and_read_from_one_descriptor(
    storage: LocalStorage, tmp_path: Path
) -> None:
    info = storage.put("in/deep/er/cat.bin", io.BytesIO(b"m" * 100_000))
    assert storage.stat("in/deep/er/cat.bin") == info
    assert storage.get("in/deep/er/cat.bin", tmp_path / "copy") == info
    assert (tmp_path / "copy").read_bytes() == b"m" * 100_000
    assert storage.entry("in/deep/er/cat.bin") == info
    with storage.open("in/deep/er/cat.bin") as f:
        assert f.read() == b"m" * 100_000
    assert [i.key for i in storage.list("in")] == ["in/deep/er/cat.bin"]
    assert os.stat(storage.root / "in/deep/er/cat.bin").st_mode & 0o777 == storage.mode
    assert os.listdir(storage.tmp) == []  # the temp file was renamed into place
    with pytest.raises(NotFoundError):
        storage.get("in/deep", tmp_path / "copy")
    with pytest.raises(InvalidKeyError):
        storage.put("in/deep", io.BytesIO(b"over a folder"))
    with pytest.raises(NotFoundError):
        storage.get("in/deep/er/cat.bin/below", tmp_path / "copy")
