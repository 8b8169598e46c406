"""End to end on a Onedata space (the Oneprovider test server): files landing in the
space start jobs through its changes stream and their outputs go back to the space; a
platform killed (-9) while 1,000 files land resumes from its cursor, missing none and
running none twice; the example in examples/onedata works as it says."""

from __future__ import annotations

import functools
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ondrop.client import Client
from tests.support.oneprovider import Oneprovider
from tests.support.up import Platform
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "onedata"
FILES = 1000
REVERSE = 'rev "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
UPPER = """#!/bin/sh
name=$(basename "$INPUT_FILE_PATH")
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.upper"
"""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.start("--container-engine", "none")
    yield platform
    if platform.proc and platform.proc.poll() is None:
        platform.stop(signal.SIGINT)


def on_space(server: Oneprovider) -> dict[str, object]:
    return {"oneprovider_host": server.url, "token": "t0ken", "space": "space1"}


def placed(server: Oneprovider, path: str, data: bytes) -> None:
    folder, _, name = path.rpartition("/")
    server.write("space1", f"{folder}/.{name}.part", data)
    server.rename("space1", f"{folder}/.{name}.part", path)


def finished(client: Client, service: str, count: int) -> dict[str, int] | None:
    counts: dict[str, int] = client.status(service)["jobs"]
    if counts.get("queued") or counts.get("running") or sum(counts.values()) < count:
        return None
    return counts


def test_the_example_reads_from_a_space_and_writes_back_to_it(
    up: Platform, oneprovider: Oneprovider, tmp_path: Path
) -> None:
    fdl = yaml.safe_load((EXAMPLE / "onedata.yaml").read_text())
    fdl["services"][0]["storage_providers"]["onedata"]["datahub"] = on_space(oneprovider)
    shutil.copy(EXAMPLE / "summarise.sh", tmp_path / "summarise.sh")
    (tmp_path / "onedata.yaml").write_text(yaml.safe_dump(fdl))
    up.cli("apply", str(tmp_path / "onedata.yaml"))
    csv = b"t,signal\n0,1.5\n1,2.5\n"
    placed(oneprovider, "experiments/raw/run1.csv", csv)
    oneprovider.write("space1", "experiments/raw/notes.txt", b"not a .csv: no job")
    summary = wait_for(lambda: oneprovider.read("space1", "experiments/summaries/run1.summary"))
    assert summary.decode().splitlines() == [
        "file: run1.csv",
        "lines: 3",
        "columns: 2",
        f"bytes: {len(csv)}",
    ]
    # the CLI uploads to the space (a job) and downloads from it, as for any provider
    (tmp_path / "run2.csv").write_text("a,b,c\n1,2,3\n")
    up.cli("put", "summarise", str(tmp_path / "run2.csv"))
    wait_for(lambda: oneprovider.read("space1", "experiments/summaries/run2.summary"))
    up.cli("get", "summarise", "-o", str(tmp_path / "got"))
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["run1.summary", "run2.summary"]
    assert "columns: 3" in (tmp_path / "got" / "run2.summary").read_text()
    with up.client() as client:
        jobs = client.jobs("summarise").values()
        assert [j["status"] for j in jobs] == ["Succeeded", "Succeeded"]
        listed = client.list_files("onedata.datahub", "experiments/summaries")
    assert [o["key"] for o in listed] == [
        "experiments/summaries/run1.summary",
        "experiments/summaries/run2.summary",
    ]


def test_a_chain_runs_from_a_space_to_a_local_folder(
    up: Platform, oneprovider: Oneprovider
) -> None:
    """An output in a space is the input of the next service, which writes to the
    platform's own folder."""
    with up.client() as client:
        client.apply(
            [
                {
                    "name": "upper",
                    "script": UPPER,
                    "input": [{"storage_provider": "onedata.space", "path": "in"}],
                    "output": [{"storage_provider": "onedata.space", "path": "mid"}],
                    "storage_providers": {"onedata": {"space": on_space(oneprovider)}},
                },
                {
                    "name": "rev",
                    "script": REVERSE,
                    "input": [{"storage_provider": "onedata.space", "path": "mid"}],
                    "output": [{"storage_provider": "local.default", "path": "done"}],
                },  # onedata.space as the service before declares it
            ]
        )
        placed(oneprovider, "in/word.txt", b"chain\n")
        done = up.data / "storage" / "done" / "word.txt.upper"
        wait_for(done.exists, 60)
        assert done.read_text() == "NIAHC\n"


def test_a_platform_killed_while_files_land_resumes_and_runs_each_once(
    up: Platform, oneprovider: Oneprovider, tmp_path: Path
) -> None:
    (tmp_path / "upper.sh").write_text(UPPER)
    fdl = {
        "services": [
            {
                "name": "upper",
                "script": "upper.sh",
                "input": [{"storage_provider": "onedata.space", "path": "in"}],
                "output": [{"storage_provider": "onedata.space", "path": "out"}],
                "storage_providers": {"onedata": {"space": on_space(oneprovider)}},
            }
        ]
    }
    (tmp_path / "upper.yaml").write_text(yaml.safe_dump(fdl))
    up.cli("apply", str(tmp_path / "upper.yaml"))
    for i in range(FILES):
        if i == FILES // 3:  # some recorded, some not yet seen, some running
            with up.client() as client:
                wait_for(lambda: client.status("upper")["jobs"].get("succeeded"), 120)
            up.stop(signal.SIGKILL)
        if i % 2:
            placed(oneprovider, f"in/f{i:04}.txt", f"file {i}".encode())
        else:
            oneprovider.write("space1", f"in/f{i:04}.txt", f"file {i}".encode())
    up.start("--container-engine", "none")
    with up.client() as client:
        done = wait_for(functools.partial(finished, client, "upper", FILES), 600)
        assert done == {"succeeded": FILES}
        assert len(client.jobs("upper")) == FILES  # one job per file: none twice, none missed
    for i in range(FILES):
        assert oneprovider.read("space1", f"out/f{i:04}.txt.upper") == f"FILE {i}".encode()
