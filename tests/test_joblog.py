"""A job's log read as it grows: whole lines only, secrets hidden even when a value is
split across two reads, the file it was opened on whatever the job does to the name, and
never through a link the job put in its place."""

from __future__ import annotations

import os
from pathlib import Path

from ondrop.joblog import LINE_MAX, NOT_A_LOG, LiveLog, read_log


def test_whole_lines_are_given_with_secrets_hidden_across_reads(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"one\ntoken=hunt")
    live = LiveLog.open(log, ["hunter2secret"])
    assert live is not None
    with live, log.open("ab") as writer:
        assert live.read() == "one\n"  # "token=hunt" waits for its line's end
        writer.write(b"er2secret\ntwo")
        writer.flush()
        assert live.read() == "token=***\n"
        assert live.read() == ""
        assert live.rest() == "two"


def test_it_reads_the_file_it_opened_when_the_job_swaps_the_name(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("mine\n")
    live = LiveLog.open(log, [])
    assert live is not None
    with live:
        secret = tmp_path / "platform-secret"
        secret.write_text("do not show\n")
        log.unlink()
        log.symlink_to(secret)
        assert live.read() == "mine\n"
        assert live.read() == ""
    assert LiveLog.open(log, []) is None  # a link is never opened
    assert read_log(log) == NOT_A_LOG


def test_a_line_that_never_ends_is_given_once_it_is_long(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"x" * (LINE_MAX + 10))
    live = LiveLog.open(log, [])
    assert live is not None
    with live:
        assert len(live.read()) == LINE_MAX + 10


def test_a_fifo_is_not_a_log(tmp_path: Path) -> None:
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    assert LiveLog.open(fifo, []) is None
    assert read_log(fifo) == NOT_A_LOG


def test_once_the_script_ended_nothing_written_after_is_read(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("mine\n")
    live = LiveLog.open(log, [])
    assert live is not None
    with live:
        live.end()  # the folder, this file with it, goes to the next job of the service
        with log.open("a") as next_job:
            next_job.write("the next job's secret\n")
        assert live.read() == "mine\n"
        assert live.read() == ""


def test_a_read_takes_about_its_limit_and_the_rest_on_the_next(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("x" * 99 + "\n" * 1 + "y" * 99 + "\n")  # two lines of 100 bytes
    live = LiveLog.open(log, [])
    assert live is not None
    with live:
        first = live.read(limit=100)
        assert first == "x" * 99 + "\n"
        assert live.read(limit=100) == "y" * 99 + "\n"
