"""The folder watcher: a file counts once it is complete; folders and temp files never."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.events.watch import FolderWatcher
from ondrop.storage import LocalStorage
from ondrop.storage.base import ObjectInfo
from ondrop.storage.local import LINK, Refused


class Seen:
    def __init__(self) -> None:
        self.items: list[ObjectInfo] = []
        self.lock = threading.Lock()

    def __call__(self, provider: str, infos: list[ObjectInfo]) -> None:
        with self.lock:
            self.items.extend(infos)

    def keys(self) -> list[str]:
        with self.lock:
            return [i.key for i in self.items]

    def objects(self) -> list[str]:
        with self.lock:
            return [i.key for i in self.items if not isinstance(i, Refused)]

    def refused(self) -> list[str]:
        with self.lock:
            return [i.key for i in self.items if isinstance(i, Refused)]

    def wait_for(self, n: int, timeout: float = 5) -> list[ObjectInfo]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.items) >= n:
                    return list(self.items)
            time.sleep(0.01)
        raise AssertionError(f"expected {n} events, got {self.keys()}")


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local.default", tmp_path / "root")


@pytest.fixture
def seen(storage: LocalStorage) -> Iterator[Seen]:
    sink = Seen()
    watcher = FolderWatcher(storage, lambda: ["in"], settle=0.2)
    watcher.start(sink)
    yield sink
    watcher.stop()


def test_a_file_written_in_pieces_counts_once_when_closed(
    storage: LocalStorage, seen: Seen
) -> None:
    (storage.root / "in").mkdir()
    with (storage.root / "in" / "big.bin").open("wb") as f:
        for _ in range(20):
            f.write(b"x" * 4096)
            f.flush()
            time.sleep(0.02)
    (info,) = seen.wait_for(1)
    assert (info.key, info.size) == ("in/big.bin", 20 * 4096)
    time.sleep(0.4)
    assert seen.keys() == ["in/big.bin"]


def test_a_file_renamed_into_place_counts_at_once(storage: LocalStorage, seen: Seen) -> None:
    (storage.root / "in").mkdir()
    (storage.root / "in" / ".ondrop-partial").write_bytes(b"data")
    os.rename(storage.root / "in" / ".ondrop-partial", storage.root / "in" / "done.txt")
    assert [i.key for i in seen.wait_for(1)] == ["in/done.txt"]


def test_a_file_moved_in_from_elsewhere_counts_after_it_settles(
    storage: LocalStorage, seen: Seen, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"moved")
    os.rename(outside, storage.root / "in" / "moved.txt")
    (info,) = seen.wait_for(1)
    assert (info.key, info.size) == ("in/moved.txt", 5)


def test_folders_and_temp_files_never_count(storage: LocalStorage, seen: Seen) -> None:
    (storage.root / "in" / "a" / "b").mkdir(parents=True)
    (storage.root / "in" / ".ondrop-tmp").write_bytes(b"half")
    time.sleep(0.5)
    assert seen.keys() == []


def test_the_rescan_on_start_offers_files_that_arrived_while_stopped(
    storage: LocalStorage,
) -> None:
    (storage.root / "in" / "sub").mkdir(parents=True)
    (storage.root / "in" / "sub" / "early.txt").write_text("1")
    (storage.root / "elsewhere.txt").write_text("not watched")
    sink = Seen()
    watcher = FolderWatcher(storage, lambda: ["in"], settle=0.2)
    watcher.start(sink)
    try:
        assert sink.keys() == ["in/sub/early.txt"]
    finally:
        watcher.stop()


def test_a_failing_sink_does_not_stop_the_watcher(storage: LocalStorage) -> None:
    calls: list[list[str]] = []

    def sink(provider: str, infos: list[ObjectInfo]) -> None:
        calls.append([i.key for i in infos])
        if len(calls) == 1:
            raise RuntimeError("store is down")

    def wait_calls(n: int) -> None:
        deadline = time.monotonic() + 5
        while len(calls) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    watcher = FolderWatcher(storage, lambda: ["in"], settle=0.2)
    watcher.start(sink)
    try:
        (storage.root / "in").mkdir()
        (storage.root / "in" / "one").write_text("1")
        wait_calls(1)
        (storage.root / "in" / "two").write_text("2")
        wait_calls(2)
        assert calls == [["in/one"], ["in/two"]]
    finally:
        watcher.stop()


def test_a_slow_writer_that_pauses_longer_than_the_settle_time_still_counts_once(
    storage: LocalStorage, seen: Seen
) -> None:
    (storage.root / "in").mkdir()
    time.sleep(0.1)  # let the watcher add its watch on the new folder
    with (storage.root / "in" / "slow.txt").open("w") as f:
        f.write("part1\n")
        f.flush()
        time.sleep(0.6)  # three times the settle time, file still open
        assert seen.keys() == []
        f.write("part2\n")
    (info,) = seen.wait_for(1)
    assert info.size == len("part1\npart2\n")
    time.sleep(0.4)
    assert len(seen.keys()) == 1


def test_a_moved_in_file_that_someone_reads_still_counts(
    storage: LocalStorage, seen: Seen, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    (tmp_path / "m.txt").write_text("moved")
    os.rename(tmp_path / "m.txt", storage.root / "in" / "m.txt")
    assert (storage.root / "in" / "m.txt").read_text() == "moved"
    assert [i.key for i in seen.wait_for(1)] == ["in/m.txt"]


def test_links_out_of_the_folder_and_odd_names_are_skipped_not_fatal(
    storage: LocalStorage, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    (tmp_path / "secret").write_text("host file")
    (storage.root / "in" / "link").symlink_to(tmp_path / "secret")
    (storage.root / "in" / "ok.txt").write_text("fine")
    os.close(
        os.open(
            os.path.join(os.fsencode(storage.root / "in"), b"bad\xffname"), os.O_CREAT | os.O_WRONLY
        )
    )
    sink = Seen()
    watcher = FolderWatcher(storage, lambda: ["in"], settle=0.2)
    watcher.start(sink)
    try:
        assert sink.objects() == ["in/ok.txt"]
        assert sink.refused() == ["in/link"]
        (storage.root / "in" / "link2").symlink_to(tmp_path / "secret")
        (storage.root / "in" / "later.txt").write_text("later")
        sink.wait_for(4)
        assert sink.objects() == ["in/ok.txt", "in/later.txt"]
        assert sink.refused() == ["in/link", "in/link2"]
    finally:
        watcher.stop()


def test_a_folder_moved_in_whole_counts_every_file_in_it(
    storage: LocalStorage, seen: Seen, tmp_path: Path
) -> None:
    (storage.root / "in").mkdir()
    outside = tmp_path / "batch"
    (outside / "deep").mkdir(parents=True)
    (outside / "a.txt").write_text("a")
    (outside / "deep" / "b.txt").write_text("b")
    os.rename(outside, storage.root / "in" / "batch")
    seen.wait_for(2)
    assert sorted(seen.keys()) == ["in/batch/a.txt", "in/batch/deep/b.txt"]


def test_files_written_into_a_new_folder_before_it_is_watched_count_once(
    storage: LocalStorage, seen: Seen
) -> None:
    for i in range(20):  # folder and file made faster than a watch can be added
        folder = storage.root / "in" / f"d{i}" / "sub"
        folder.mkdir(parents=True)
        (folder / "f.txt").write_text(str(i))
    seen.wait_for(20)
    time.sleep(0.5)
    assert sorted(seen.keys()) == sorted(f"in/d{i}/sub/f.txt" for i in range(20))


def test_a_folder_moved_out_is_no_longer_watched(
    storage: LocalStorage, seen: Seen, tmp_path: Path
) -> None:
    (storage.root / "in" / "gone").mkdir(parents=True)
    time.sleep(0.1)
    os.rename(storage.root / "in" / "gone", tmp_path / "gone")
    time.sleep(0.1)
    (tmp_path / "gone" / "late.txt").write_text("not ours")
    (storage.root / "in" / "here.txt").write_text("ours")
    assert [i.key for i in seen.wait_for(1)] == ["in/here.txt"]
    time.sleep(0.4)
    assert seen.keys() == ["in/here.txt"]


def test_an_overflowing_inotify_queue_is_followed_by_a_rescan(storage: LocalStorage) -> None:
    from ondrop.events import inotify

    (storage.root / "in").mkdir()
    (storage.root / "in" / "missed.txt").write_text("1")
    sink = Seen()
    watcher = FolderWatcher(storage, lambda: ["in"], settle=0.2)
    watcher._sink = sink  # not started: only the handling of one event is under test
    watcher._handle(inotify.InotifyEvent(-1, inotify.Q_OVERFLOW, ""), [])
    watcher.stop()
    assert sink.keys() == ["in/missed.txt"]


@pytest.mark.parametrize("inside", [True, False], ids=["to-a-file-inside", "to-a-host-file"])
def test_a_link_lands_as_refused_never_as_an_object(
    storage: LocalStorage, seen: Seen, tmp_path: Path, inside: bool
) -> None:
    (storage.root / "in").mkdir()
    (storage.root / "other").mkdir()
    target = storage.root / "other" / "result.txt" if inside else tmp_path / "secret"
    target.write_text("not for this service")
    (storage.root / "in" / "link").symlink_to(target)
    (storage.root / "in" / "dirlink").symlink_to(target.parent)
    seen.wait_for(2)
    assert sorted(seen.refused()) == ["in/dirlink", "in/link"]
    assert seen.objects() == []
    assert all(isinstance(i, Refused) and i.reason == LINK for i in seen.items)


def test_names_starting_with_a_dot_start_nothing(storage: LocalStorage, seen: Seen) -> None:
    """Writers that rename when done write under a dot name first: only the final name
    counts, and so does a folder moved into place from under a dot name."""
    (storage.root / "in").mkdir()
    (storage.root / "in" / ".upload.part").write_text("whole")
    os.rename(storage.root / "in" / ".upload.part", storage.root / "in" / "upload.txt")
    (storage.root / "in" / ".swap").write_text("an editor's")
    (storage.root / "in" / ".batch" / "deep").mkdir(parents=True)
    (storage.root / "in" / ".batch" / "deep" / "a.txt").write_text("a")
    (storage.root / "in" / ".batch" / ".b.txt").write_text("b")
    os.rename(storage.root / "in" / ".batch", storage.root / "in" / "batch")
    seen.wait_for(2)
    (storage.root / "in" / "last.txt").write_text("last")
    seen.wait_for(3)
    assert sorted(seen.keys()) == ["in/batch/deep/a.txt", "in/last.txt", "in/upload.txt"]


def test_the_rescan_offers_no_dot_names_below_the_input_folder(storage: LocalStorage) -> None:
    """Only names below the input folder are the writers' temporary ones: an input folder
    under a dot name still counts."""
    inbox = storage.root / ".inbox" / "in"
    (inbox / ".git").mkdir(parents=True)
    (inbox / ".git" / "config").write_text("x")
    (inbox / ".hidden.txt").write_text("x")
    (inbox / "sub").mkdir()
    (inbox / "sub" / ".part").write_text("x")
    (inbox / "sub" / "seen.txt").write_text("x")
    sink = Seen()
    watcher = FolderWatcher(storage, lambda: [".inbox/in"], settle=0.2)
    watcher.start(sink)
    try:
        assert sink.keys() == [".inbox/in/sub/seen.txt"]
        (inbox / ".late.part").write_text("2")
        (inbox / "late.txt").write_text("2")
        sink.wait_for(2)
        assert sink.keys() == [".inbox/in/sub/seen.txt", ".inbox/in/late.txt"]
    finally:
        watcher.stop()
