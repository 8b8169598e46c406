"""Storing an archive's members several at a time: all in their order, and when one
fails, what was stored is known (so that it can be withdrawn) and the failed one named."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from ondrop.api.archive import members
from ondrop.api.routes.files import Storing
from ondrop.errors import StorageError
from ondrop.storage import MemoryStorage
from ondrop.storage.base import ObjectInfo


class Remote(MemoryStorage):
    """A store that takes several puts at once, and refuses one key."""

    concurrent = 4

    def __init__(self, refuse: str = "") -> None:
        super().__init__("memory.remote")
        self.refuse = refuse
        self.threads: set[str] = set()

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        self.threads.add(threading.current_thread().name)
        if key == self.refuse:
            raise StorageError(f"{self.name}: cannot write {key!r}")
        return super().put(key, source)


def archive(path: Path, sizes: list[int]) -> Path:
    with tarfile.open(path, "w") as tar:
        for i, size in enumerate(sizes):
            info = tarfile.TarInfo(f"m{i:02}.bin")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes([i]) * size))
    return path


def test_the_members_are_stored_in_their_order_several_at_once(tmp_path: Path) -> None:
    sizes = [10] * 20 + [(1 << 20) + 1] + [3] * 5  # one is streamed, not read whole
    body = archive(tmp_path / "a.tar", sizes)
    store = Remote()
    storing = Storing(store)
    storing.put_all(body, members(body, "in"))
    assert [i.key for i in storing.stored] == [f"in/m{i:02}.bin" for i in range(len(sizes))]
    assert [i.size for i in storing.stored] == sizes
    assert any(t.startswith("ondrop-storing") for t in store.threads)
    assert storing.failed is None


def test_a_member_that_fails_is_named_and_the_others_are_known(tmp_path: Path) -> None:
    body = archive(tmp_path / "a.tar", [10] * 12)
    store = Remote(refuse="in/m05.bin")
    storing = Storing(store)
    with pytest.raises(StorageError, match="m05"):
        storing.put_all(body, members(body, "in"))
    assert storing.failed == "in/m05.bin"
    kept = {i.key for i in storing.stored}
    assert "in/m05.bin" not in kept and "in/m00.bin" in kept
    assert kept == {o.key for o in store.list("in")}  # everything stored is accounted for
