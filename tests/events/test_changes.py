"""The changes stream of a Onedata space: files are offered as they land, once each
version, from where the last run stopped; folders, deleted files and temporary names
start nothing; a token that may not read the stream falls back to listing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ondrop.events.changes import ChangesStream, cursor_key
from ondrop.storage import build
from ondrop.storage.base import ObjectInfo
from ondrop.storage.onedata import OnedataStorage
from ondrop.store.sqlite import SQLiteStore
from tests.support.oneprovider import Oneprovider
from tests.support.waiting import wait_for


class Offered:
    """A sink that keeps what it is offered."""

    def __init__(self) -> None:
        self.infos: list[ObjectInfo] = []
        self.lock = threading.Lock()

    def __call__(self, provider: str, infos: list[ObjectInfo]) -> None:
        assert provider == "onedata.test"
        with self.lock:
            self.infos.extend(infos)

    def offered(self) -> list[str]:
        with self.lock:
            return [info.key for info in self.infos]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "ondrop.db")
    yield store
    store.close()


@contextmanager
def streaming(
    server: Oneprovider,
    store: SQLiteStore,
    sink: Offered,
    token: str = "t0ken",
    settle: float = 0.2,
    fallback: float = 10.0,
    folders: tuple[str, ...] = ("in",),
    opened: bool = True,
) -> Iterator[ChangesStream]:
    """A stream of space1 started on `sink`; with `opened`, once its stream is open (so
    that what is written next is a change it reads, not a file its first listing finds)."""
    config = {"oneprovider_host": server.url, "token": token, "space": "space1"}
    provider = build("onedata.test", config)
    assert isinstance(provider, OnedataStorage)
    stream = ChangesStream(provider, lambda: list(folders), store, fallback, settle=settle)
    stream.start(sink)
    try:
        if opened:
            wait_for(stream._opened.is_set)
        yield stream
    finally:
        stream.stop()
        provider.close()


def placed(server: Oneprovider, path: str, data: bytes) -> None:
    """Written under a temporary name and renamed into place, as careful writers do."""
    folder, _, name = path.rpartition("/")
    server.write("space1", f"{folder}/.{name}.part", data)
    server.rename("space1", f"{folder}/.{name}.part", path)


def test_a_file_renamed_into_place_is_offered_without_waiting_for_it_to_settle(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    sink = Offered()
    with streaming(oneprovider, store, sink, settle=3600):
        placed(oneprovider, "in/a.txt", b"whole")
        wait_for(lambda: sink.offered() == ["in/a.txt"])
    assert sink.infos[0].size == 5


def test_a_file_written_in_pieces_where_it_lies_is_one_version(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    sink = Offered()
    with streaming(oneprovider, store, sink, settle=1.0):
        oneprovider.write("space1", "in/pieces.bin", b"0123456789" * 10, chunks=5)
        wait_for(lambda: sink.offered())
        placed(oneprovider, "in/marker.txt", b"after")
        wait_for(lambda: "in/marker.txt" in sink.offered())
    assert [(i.key, i.size) for i in sink.infos] == [("in/pieces.bin", 100), ("in/marker.txt", 5)]


def test_folders_deleted_files_temporary_names_and_other_folders_start_nothing(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    sink = Offered()
    with streaming(oneprovider, store, sink, settle=0.05):
        oneprovider.mkdir("space1", "in/sub")
        oneprovider.write("space1", "in/gone.txt", b"soon deleted")
        oneprovider.remove("space1", "in/gone.txt")
        oneprovider.write("space1", "in/.half-written", b"a writer's temporary")
        oneprovider.write("space1", "out/result.txt", b"not an input folder")
        oneprovider.write("space1", "in/sub/deep.txt", b"inside an input folder")
        oneprovider.write("space1", "in/last.txt", b"the marker")
        wait_for(lambda: "in/last.txt" in sink.offered())
    assert sorted(sink.offered()) == ["in/last.txt", "in/sub/deep.txt"]


def test_a_restart_reads_on_from_the_cursor_and_offers_nothing_twice(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    oneprovider.write("space1", "in/before.txt", b"there before the first start")
    first = Offered()
    with streaming(oneprovider, store, first) as stream:
        wait_for(lambda: first.offered() == ["in/before.txt"])  # the first start lists
        placed(oneprovider, "in/a.txt", b"a")
        wait_for(lambda: "in/a.txt" in first.offered())
        wait_for(
            lambda: store.get_meta(cursor_key(stream.provider)) == str(oneprovider.seq("space1"))
        )
    placed(oneprovider, "in/b.txt", b"b")  # while it is stopped
    oneprovider.write("space1", "in/a.txt", b"a, written again")
    again = Offered()
    with streaming(oneprovider, store, again):
        wait_for(lambda: sorted(again.offered()) == ["in/a.txt", "in/b.txt"])
        placed(oneprovider, "in/c.txt", b"c")
        wait_for(lambda: "in/c.txt" in again.offered())
    assert sorted(again.offered()) == ["in/a.txt", "in/b.txt", "in/c.txt"]
    versions = {i.key: i.version for i in first.infos + again.infos}
    assert [i.version for i in again.infos if i.key == "in/a.txt"] == [versions["in/a.txt"]]
    assert versions["in/a.txt"] != next(i.version for i in first.infos if i.key == "in/a.txt")


@pytest.mark.parametrize(
    ("changes", "caveats", "said"),
    [
        (False, False, "HTTP 403"),  # no changes privilege
        (True, True, "HTTP 401"),  # data caveats: the stream refuses the token
    ],
)
def test_a_token_refused_the_stream_falls_back_to_listing_and_says_why(
    oneprovider: Oneprovider,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
    changes: bool,
    caveats: bool,
    said: str,
) -> None:
    oneprovider.add_token("refused", changes=changes, caveats=caveats)
    sink = Offered()
    with (
        caplog.at_level(logging.WARNING),
        streaming(oneprovider, store, sink, token="refused", fallback=0.1, opened=False),
    ):
        oneprovider.write("space1", "in/listed.txt", b"found by a listing")
        wait_for(lambda: "in/listed.txt" in sink.offered())
    assert "may not read the changes stream" in caplog.text and said in caplog.text
    assert "every 0.1 s" in caplog.text


def test_a_provider_that_cannot_answer_is_waited_for_and_nothing_is_missed(
    oneprovider: Oneprovider, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    oneprovider.unavailable = True
    sink = Offered()
    with caplog.at_level(logging.WARNING), streaming(oneprovider, store, sink, opened=False):
        wait_for(lambda: "the changes stream of onedata.test stopped" in caplog.text)
        oneprovider.write("space1", "in/meanwhile.txt", b"written while it failed")
        oneprovider.unavailable = False
        wait_for(lambda: sink.offered() == ["in/meanwhile.txt"])
    assert "jobs wait and retry" in caplog.text


def test_a_folder_moved_into_an_input_folder_offers_what_it_holds(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    oneprovider.write("space1", "staging/batch/one.txt", b"1")
    oneprovider.write("space1", "staging/batch/two.txt", b"2")
    oneprovider.write("space1", "in/.upload/three.txt", b"3")
    sink = Offered()
    with streaming(oneprovider, store, sink):
        oneprovider.rename("space1", "staging/batch", "in/batch")
        oneprovider.rename("space1", "in/.upload", "in/done")
        wanted = ["in/batch/one.txt", "in/batch/two.txt", "in/done/three.txt"]
        wait_for(lambda: sorted(sink.offered()) == wanted)
        placed(oneprovider, "in/marker.txt", b"m")
        wait_for(lambda: "in/marker.txt" in sink.offered())
    assert sorted(sink.offered()) == [*wanted, "in/marker.txt"]  # each once


def test_a_file_moved_from_one_input_folder_to_another_is_offered_in_both(
    oneprovider: Oneprovider, store: SQLiteStore
) -> None:
    sink = Offered()
    with streaming(oneprovider, store, sink, settle=0.05, folders=("in1", "in2")):
        placed(oneprovider, "in1/x.txt", b"x")
        wait_for(lambda: sink.offered() == ["in1/x.txt"])
        oneprovider.mkdir("space1", "in2")
        oneprovider.rename("space1", "in1/x.txt", "in2/x.txt")
        wait_for(lambda: sink.offered() == ["in1/x.txt", "in2/x.txt"])


def test_a_name_that_cannot_be_a_key_starts_nothing_and_says_so(
    oneprovider: Oneprovider, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Offered()
    with caplog.at_level(logging.WARNING), streaming(oneprovider, store, sink):
        oneprovider.write("space1", "in/bad\nname.txt", b"a newline in its name")
        placed(oneprovider, "in/good.txt", b"g")
        wait_for(lambda: "in/good.txt" in sink.offered())
    assert sink.offered() == ["in/good.txt"]
    assert "control character" in caplog.text and "starts no job" in caplog.text


def test_the_cursor_belongs_to_one_oneprovider_and_space(oneprovider: Oneprovider) -> None:
    def provider(host: str) -> OnedataStorage:
        config = {"oneprovider_host": host, "token": "t0ken", "space": "space1"}
        built = build("onedata.test", config)
        assert isinstance(built, OnedataStorage)
        return built

    with provider(oneprovider.url) as here, Oneprovider() as other:
        other.add_space("space1")
        other.add_token("t0ken")
        with provider(other.url) as there:
            assert cursor_key(here) != cursor_key(there)
