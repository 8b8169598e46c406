"""End to end: what a hostile job of the process runtime tries on a platform run as root
(`ondrop up` in a subprocess), and what it must not get: the platform's environment, its
store and data folder, another job's files, root's setuid bit on a stored file, or a
process that outlives it."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.up import Platform
from tests.support.waiting import processes_with, spawners_of, wait_for

pytestmark = pytest.mark.e2e

if os.geteuid() != 0 and not os.environ.get("CI"):
    pytest.skip("the process runtime isolates jobs only as root", allow_module_level=True)

PASSWORD = "platform-only-admin-password-1f3a"
JOB_UIDS = "2100000000-2100000063"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "data")
    platform.env |= {"ONDROP_ADMIN_PASSWORD": PASSWORD, "ONDROP_JOB_UIDS": JOB_UIDS}
    platform.start()
    yield platform
    if platform.proc and platform.proc.poll() is None:
        platform.stop_now()


def apply(up: Platform, folder: Path, script: str, name: str = "snoop", **env: str) -> None:
    (folder / f"{name}.sh").write_text(script)
    variables = "".join(f"\n          {k}: {v!r}" for k, v in env.items())
    fdl = folder / f"{name}.yaml"
    fdl.write_text(f"""
services:
  - name: {name}
    script: {name}.sh
    input: [{{storage_provider: minio, path: {name}/in}}]
    output: [{{storage_provider: minio, path: {name}/out}}]
    environment:
      variables:
        DATA: {str(up.data)!r}{variables}
""")
    up.cli("apply", str(fdl))


def run_one(up: Platform, folder: Path, service: str, text: str = "hello") -> None:
    (folder / "in.txt").write_text(text)
    up.cli("put", service, str(folder / "in.txt"))
    assert up.cli("wait", service, "--timeout", "60").returncode == 0, up.cli("jobs", service)


SNOOP = r"""#!/bin/bash
out="$TMP_OUTPUT_DIR/seen.txt"
echo "input: $(cat "$INPUT_FILE_PATH")" > "$out"
echo "uid: $(id -u)" >> "$out"
for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f" 2>/dev/null; done >> "$out"
cat "$DATA"/ondrop.db* "$DATA"/admin.json "$DATA"/storage/private/* >> "$out" 2>/dev/null
ls -A "$DATA" > "$TMP_OUTPUT_DIR/data.txt" 2>&1
"""


def test_a_job_reads_neither_the_platforms_environment_nor_its_data_folder(
    up: Platform, tmp_path: Path
) -> None:
    private = up.data / "storage" / "private"
    private.mkdir(parents=True)
    (private / "note.txt").write_text("someone else's file")
    apply(up, tmp_path, SNOOP)
    run_one(up, tmp_path, "snoop")
    seen = (up.data / "storage" / "snoop" / "out" / "seen.txt").read_text(errors="replace")
    assert "input: hello" in seen  # it ran, and read what it was given
    uid = int(seen.split("uid: ")[1].split()[0])
    assert uid in range(2100000000, 2100000064)
    assert PASSWORD not in seen  # neither the platform's environment nor admin.json
    assert "someone else's file" not in seen
    assert "SQLite format" not in seen and "ondrop.db" not in seen
    listed = (up.data / "storage" / "snoop" / "out" / "data.txt").read_text()
    assert listed.split() == ["work"]  # the data folder shows the work folders alone


def test_a_job_cannot_read_another_running_jobs_folder(up: Platform, tmp_path: Path) -> None:
    hold = r"""#!/bin/bash
echo "the other job's secret input" > "$TMPDIR/mine.txt"
while [ ! -e "$TMPDIR/go" ]; do sleep 0.05; done
"""
    peek = r"""#!/bin/bash
cat "$DATA"/work/*/input/* "$DATA"/work/*/tmp/* "$DATA"/work/*/script \
  > "$TMP_OUTPUT_DIR/seen.txt" 2>&1
cat "$INPUT_FILE_PATH" >> "$TMP_OUTPUT_DIR/seen.txt"
"""
    apply(up, tmp_path, hold, name="hold")
    apply(up, tmp_path, peek, name="peek")
    (tmp_path / "secret.txt").write_text("the other job's secret input")
    up.cli("put", "hold", str(tmp_path / "secret.txt"))
    (mine,) = wait_for(lambda: list((up.data / "work").glob("*/tmp/mine.txt")))
    run_one(up, tmp_path, "peek", "peek's own input")
    (mine.parent / "go").write_text("")
    assert up.cli("wait", "hold", "--timeout", "60").returncode == 0
    seen = (up.data / "storage" / "peek" / "out" / "seen.txt").read_text()
    assert "peek's own input" in seen
    assert "secret" not in seen and "sleep 0.05" not in seen, seen


def test_an_output_a_job_made_setuid_is_stored_as_a_plain_file_of_the_platforms(
    up: Platform, tmp_path: Path
) -> None:
    script = """#!/bin/sh
cp /bin/true "$TMP_OUTPUT_DIR/tool"
chmod 6755 "$TMP_OUTPUT_DIR/tool"
chmod 1777 "$TMP_OUTPUT_DIR"
ln "$TMP_OUTPUT_DIR/tool" "$TMP_OUTPUT_DIR/tool.link" || true
"""
    apply(up, tmp_path, script, name="suid")
    run_one(up, tmp_path, "suid")
    for name in ("tool", "tool.link"):
        info = (up.data / "storage" / "suid" / "out" / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o644, oct(info.st_mode)
        assert (info.st_uid, info.st_gid, info.st_nlink) == (os.getuid(), os.getgid(), 1)


def test_what_a_job_started_in_a_session_of_its_own_ends_with_it(
    up: Platform, tmp_path: Path
) -> None:
    marker = f"ondrop-escaper-{os.getpid()}-{time.monotonic_ns()}"
    script = f"#!/bin/bash\nsetsid -f bash -c 'exec -a {marker} sleep 300'\nsleep 0.2\n"
    apply(up, tmp_path, script, name="escape")
    run_one(up, tmp_path, "escape")
    wait_for(lambda: not processes_with(marker))


def running_with_an_escaper(up: Platform, folder: Path) -> str:
    """A job that runs on, having started a process in a session of its own: the marker
    both their command lines hold, once both run."""
    marker = f"ondrop-escaper-{os.getpid()}-{time.monotonic_ns()}"
    script = f"#!/bin/bash\nsetsid -f bash -c 'exec -a {marker}-left sleep 300'\n"
    script += f"exec -a {marker}-job sleep 300\n"
    apply(up, folder, script, name="escape")
    (folder / "a.txt").write_text("a")
    up.cli("put", "escape", str(folder / "a.txt"))
    wait_for(lambda: len(processes_with(marker)) == 2)
    return marker


def test_a_platform_killed_takes_its_jobs_and_what_they_started_with_it(
    up: Platform, tmp_path: Path
) -> None:
    marker = running_with_an_escaper(up, tmp_path)
    up.stop(signal.SIGKILL)
    wait_for(lambda: not processes_with(marker))  # the spawner saw the platform go
    wait_for(lambda: not spawners_of(up.data))


def test_jobs_left_by_a_platform_and_spawner_killed_together_are_killed_on_restart(
    up: Platform, tmp_path: Path
) -> None:
    marker = running_with_an_escaper(up, tmp_path)
    (spawner,) = spawners_of(up.data)
    os.kill(spawner, signal.SIGKILL)  # as the OOM killer, or a kill -9 of everything, might
    up.stop(signal.SIGKILL)
    left = processes_with(marker)
    assert len(left) == 2  # nothing was left to kill them
    up.start()
    wait_for(lambda: not set(left) & set(processes_with(marker)))
    up.stop_now()
