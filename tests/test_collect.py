"""Lineage and fan-in: every job knows the original input it descends from, and a service
that collects runs once per original input when all of that input's jobs have ended."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ondrop.chains import follow
from ondrop.errors import DefinitionError, NotFoundError
from ondrop.fdl.loader import parse_service
from ondrop.fdl.models import Service
from ondrop.platform import Platform
from ondrop.settings import Settings
from ondrop.store.base import FINISHED, SUCCEEDED, Job

SPLIT = 'for i in 1 2 3; do echo "$i" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").$i"; done'
# The piece ending in .2 fails on its first attempt: the family is not over until its retry.
DETECT = """
case "$INPUT_FILE_PATH" in *.2) [ "$JOB_ATTEMPT" = 1 ] && exit 3;; esac
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").found"
"""
SUMMARY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"; ls "$TMP_INPUT_DIR" > "$TMP_OUTPUT_DIR/files"'


def services(**summary: object) -> list[Service]:
    raw = [
        {"name": "split", "script": SPLIT, "input": [{"path": "v/in"}],
         "output": [{"path": "v/parts"}]},
        {"name": "detect", "script": DETECT, "retries": 1, "input": [{"path": "v/parts"}],
         "output": [{"path": "v/found"}]},
        {"name": "summary", "script": SUMMARY, "collect": "detect",
         "output": [{"path": "v/summary"}], **summary},
    ]  # fmt: skip
    return [parse_service(r)[0] for r in raw]


def wait_for(platform: Platform, service: str, count: int, timeout: float = 30) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = platform.store.jobs(service)
        if len(jobs) >= count and all(j.status in FINISHED for j in jobs):
            return jobs
        time.sleep(0.05)
    raise AssertionError(f"{service}: {[(j.id, j.status) for j in platform.store.jobs(service)]}")


def test_a_collecting_service_runs_once_per_input_after_all_its_pieces(
    platform: Platform, settings: Settings
) -> None:
    platform.apply(services())
    inbox = Path(settings.data) / "storage" / "v" / "in"
    for name in ("a.mp4", "b.mp4"):
        (inbox / name).write_text(name)
    detect = wait_for(platform, "detect", 6)
    (first, second) = wait_for(platform, "summary", 2)
    time.sleep(0.5)  # nothing more comes
    assert len(platform.store.jobs("summary")) == 2
    assert all(j.status == SUCCEEDED for j in [*detect, first, second])
    assert sorted(j.input_key for j in (first, second)) == ["v/in/a.mp4", "v/in/b.mp4"]
    retried = [j for j in detect if j.input_key.endswith(".2")]
    assert [j.attempts for j in retried] == [2, 2]
    summary = Path(settings.data) / "storage" / "v" / "summary"
    manifest = json.loads((summary / "a.mp4.json").read_text())
    assert manifest["input"] == {"provider": "local.default", "key": "v/in/a.mp4"}
    assert manifest["collected"] == "detect"
    pieces = sorted(j["files"][0] for j in manifest["jobs"] if j["service"] == "detect")
    assert pieces == ["a.mp4.1.found", "a.mp4.2.found", "a.mp4.3.found"]
    assert {j["service"] for j in manifest["jobs"]} == {"split", "detect"}
    staged = (summary / "files").read_text().split()
    assert len(staged) == 4  # the manifest and the three pieces of one input, no others
    # Every job of the family knows its original input.
    for job in platform.store.jobs("detect"):
        origin = platform.store.origin(job.id)
        assert origin is not None and origin.key in ("v/in/a.mp4", "v/in/b.mp4")


def test_a_family_left_uncollected_by_a_stop_is_collected_on_the_next_start(
    settings: Settings,
) -> None:
    platform = Platform(settings)
    platform.start()
    platform.apply(services())
    platform.intake.collect = lambda job_id: []  # type: ignore[method-assign]  # "crashed"
    (Path(settings.data) / "storage" / "v" / "in" / "c.mp4").write_text("c")
    wait_for(platform, "detect", 3)
    assert platform.store.jobs("summary") == []
    platform.stop()
    again = Platform(settings)
    again.start()
    try:
        (summary,) = wait_for(again, "summary", 1)
        assert summary.input_key == "v/in/c.mp4"
    finally:
        again.stop()


def test_collect_must_name_a_service_and_takes_no_input(platform: Platform) -> None:
    with pytest.raises(DefinitionError) as caught:
        platform.apply(services()[2:])
    assert "collect names 'detect', which is not a service" in str(caught.value)
    with pytest.raises(DefinitionError) as caught:
        services(input=[{"path": "v/x"}])
    assert "remove its input, or its collect" in str(caught.value)


def test_a_chain_is_followed_from_its_first_job_to_its_collection(
    platform: Platform, settings: Settings
) -> None:
    platform.apply(services())
    (Path(settings.data) / "storage" / "v" / "in" / "d.mp4").write_text("d")
    (split,) = wait_for(platform, "split", 1)
    wait_for(platform, "summary", 1)
    found = follow(platform.store, platform.intake, [split.id])
    assert not found.busy and found.failed == []
    assert [s.service for s in found.stages] == ["split", "detect", "summary"]
    assert [s.jobs["succeeded"] for s in found.stages] == [1, 3, 1]
    # Any job of the family stands for all of it; several name it once.
    (summary,) = platform.store.jobs("summary")
    assert follow(platform.store, platform.intake, [summary.id, split.id]).stages == found.stages
    with pytest.raises(NotFoundError) as caught:
        follow(platform.store, platform.intake, [split.id, "split-gone"])
    assert "no such job: split-gone" in str(caught.value)


def test_a_chain_whose_collection_is_still_to_start_is_busy(
    platform: Platform, settings: Settings
) -> None:
    platform.apply(services())
    platform.intake.collect = lambda job_id: []  # type: ignore[method-assign]  # not yet
    (Path(settings.data) / "storage" / "v" / "in" / "e.mp4").write_text("e")
    detect = wait_for(platform, "detect", 3)
    found = follow(platform.store, platform.intake, [detect[0].id])
    assert found.busy  # no job queued or running, but summary is yet to run
    assert [s.service for s in found.stages] == ["split", "detect"]


def test_a_failed_job_of_a_chain_is_named(platform: Platform, settings: Settings) -> None:
    (detect,) = [s for s in services() if s.name == "detect"]
    platform.apply([*services()[:1], detect.model_copy(update={"retries": 0}), services()[2]])
    (Path(settings.data) / "storage" / "v" / "in" / "f.mp4").write_text("f")
    (split,) = wait_for(platform, "split", 1)
    wait_for(platform, "summary", 1)
    found = follow(platform.store, platform.intake, [split.id])
    (failed,) = found.failed
    assert failed.service == "detect" and failed.input_key.endswith("f.mp4.2")
    assert {s.service: s.jobs["failed"] for s in found.stages} == {
        "split": 0,
        "detect": 1,
        "summary": 0,
    }
