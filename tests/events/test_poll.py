"""The poller: each listing offers the objects of the input folders; a local folder listed
for want of inotify offers its links as refused, and no listing offers a dot name."""

from __future__ import annotations

from pathlib import Path

from ondrop.events.poll import Poller
from ondrop.storage import LocalStorage, MemoryStorage
from ondrop.storage.base import ObjectInfo
from ondrop.storage.local import LINK, Refused


def offered(poller: Poller) -> list[ObjectInfo]:
    got: list[ObjectInfo] = []
    poller._sink = lambda provider, infos: got.extend(infos)  # one pass, not the thread
    poller.poll()
    return got


def test_a_local_folder_without_inotify_offers_links_as_refused_and_no_dot_names(
    tmp_path: Path,
) -> None:
    storage = LocalStorage("local.test", tmp_path / "root")
    inbox = storage.root / "in"
    (inbox / ".partial").mkdir(parents=True)
    (inbox / ".partial" / "a.txt").write_text("half")
    (inbox / ".b.txt.swp").write_text("half")
    (inbox / "b.txt").write_text("whole")
    (tmp_path / "secret").write_text("host file")
    (inbox / "link").symlink_to(tmp_path / "secret")
    (inbox / ".hidden-link").symlink_to(tmp_path / "secret")
    got = offered(Poller(storage, lambda: ["in"], interval=0))
    assert [(i.key, type(i)) for i in got] == [("in/b.txt", ObjectInfo), ("in/link", Refused)]
    assert isinstance(got[1], Refused) and got[1].reason == LINK


def test_a_store_listing_offers_no_dot_names(tmp_path: Path) -> None:
    import io

    storage = MemoryStorage("memory.test")
    for key in ("in/.x.part", "in/.tmp/y", "in/z", "in/sub/.w"):
        storage.put(key, io.BytesIO(b"1"))
    got = offered(Poller(storage, lambda: ["in"], interval=0))
    assert [i.key for i in got] == ["in/z"]
