"""End to end on a PostgreSQL store: `ondrop up --store postgresql://...` runs jobs as on
its SQLite file; services and jobs live in the database, so a control plane on another
data folder serves them; a second control plane on the same store, while the first runs,
is refused with a message that says why, and a killed one's hold goes with it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.test_cli_e2e import write_fdl
from tests.support.servers import Postgres
from tests.support.up import Platform
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_a_control_plane_on_postgresql_runs_jobs_and_keeps_them_in_the_database(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.database()
    first = Platform(tmp_path / "first")
    first.start("--store", url)
    try:
        assert "created upper" in first.cli("apply", str(write_fdl(tmp_path))).stdout
        inbox = first.data / "storage" / "docs" / "in"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "dropped.txt").write_text("dropped\n")
        assert first.cli("wait", "upper", "--timeout", "60").returncode == 0
        out = first.data / "storage" / "docs" / "out" / "dropped.txt.upper"
        assert wait_for(out.exists) and out.read_text() == "DROPPED\n"
        assert not (first.data / "ondrop.db").exists()  # the database holds it all

        second = Platform(tmp_path / "second")
        with pytest.raises(AssertionError) as caught:
            second.start("--store", url)
        said = str(caught.value)
        assert "another ondrop up is running on the store" in said
        assert postgres.url("").rstrip("/") in said and "--store" in said
        assert "Traceback" not in said
    finally:
        first.stop(signal.SIGKILL)  # its hold on the store goes with its connection

    again = Platform(tmp_path / "second")
    again.start("--store", url)
    try:
        assert "upper" in again.cli("services").stdout  # applied on the first one
        jobs = again.cli("jobs", "upper").stdout
        assert "dropped.txt" in jobs and "succeeded" in jobs.lower()
    finally:
        again.stop()
