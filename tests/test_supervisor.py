"""The supervisor: stage in, run with the environment contract, stage out with filters."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ondrop.events.base import invoke_event, object_event
from ondrop.events.payloads import Payloads
from ondrop.fdl.models import Service
from ondrop.jobs import SYNC_PRIORITY, Cause
from ondrop.pools.base import Allocation
from ondrop.pools.specs import job_spec
from ondrop.runtime.base import RunResult, RunSpec, Runtime
from ondrop.runtime.fake import FakeRuntime
from ondrop.runtime.process import ProcessRuntime
from ondrop.storage import LocalStorage, MemoryStorage, Providers
from ondrop.storage.base import ObjectInfo, StorageProvider
from ondrop.store.base import FAILED, INTERRUPTED, SUCCEEDED, Claim, NewJob, Outcome
from ondrop.store.sqlite import SQLiteStore
from ondrop.supervisor import Folders, Supervisor
from tests.support.stored import saved


@dataclass
class Rig:
    store: SQLiteStore
    storage: StorageProvider
    supervisor: Supervisor
    runtime: Runtime
    payloads: Payloads
    outputs: list[tuple[str, ObjectInfo, str]] = field(default_factory=list)

    def claim_for(
        self,
        service: Service,
        key: str = "in/photo.png",
        data: bytes = b"pixels",
        priority: int = 0,
    ) -> Claim:
        if key:
            info = self.storage.put(key, io.BytesIO(data))
            event = object_event(self.storage.name, key, info.version, info.size)
        else:
            body = self.payloads.folder.parent / "body"
            body.write_bytes(data)
            event = invoke_event(self.payloads.adopt(body), len(data), body="raw")
        saved(self.store, service.name)
        self.store.add_event(
            event, [NewJob(f"job-{time.monotonic_ns()}", service.name, priority=priority)]
        )
        (claim,) = self.store.claim(1, {}, time.time())
        return claim

    def run(self, claim: Claim, service: Service, allocation: Allocation) -> Outcome:
        """Run the claimed job through the supervisor, as its JobSpec; the outputs it
        reports are noted in `outputs`."""
        report = self.supervisor.run(job_spec(self.store, claim, service, allocation))
        assert (report.job_id, report.attempt) == (claim.job.id, claim.attempt)
        self.outputs.extend((p, info, claim.job.id) for p, info in report.outputs)
        return report.outcome


ALLOC = Allocation(timeout=60.0)


def rig(tmp_path: Path, runtime: Runtime, storage: StorageProvider | None = None) -> Rig:
    storage = storage or MemoryStorage("memory.default")
    store = SQLiteStore(tmp_path / "s.db")
    outputs: list[tuple[str, ObjectInfo, str]] = []
    payloads = Payloads(tmp_path / "payloads")
    supervisor = Supervisor(
        store,
        Providers({"minio.default": storage, "memory.default": storage}),
        lambda s: runtime,
        Folders(tmp_path / "work", tmp_path / "results"),
        payloads=payloads,
    )
    return Rig(store, storage, supervisor, runtime, payloads, outputs)


def service(**extra: Any) -> Service:
    return Service.model_validate(
        {
            "name": "svc",
            "script": "true",
            "input": [{"path": "in"}],
            "output": [{"path": "out"}],
            **extra,
        }
    )


def test_outputs_are_stored_under_the_output_path_and_announced(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service())
    outcome = r.run(claim, service(), ALLOC)
    assert outcome.status == SUCCEEDED and outcome.log == "copied\n"
    with r.storage.open("out/photo.png") as f:
        assert f.read() == b"pixels"
    assert [(p, i.key, j) for p, i, j in r.outputs] == [
        ("memory.default", "out/photo.png", claim.job.id)
    ]
    producer = r.store.producer("memory.default", "out/photo.png")
    assert producer is not None and producer.id == claim.job.id
    # The work folder is emptied and kept for the next job, and deleted at close.
    (work,) = (tmp_path / "work").iterdir()
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == [
        "input", "input.spare", "log", "output", "script", "tmp",
    ]  # fmt: skip
    assert (work / "log").stat().st_size == (work / "input.spare").stat().st_size == 0
    r.supervisor.close()
    assert list((tmp_path / "work").iterdir()) == []


def test_the_script_sees_the_environment_contract(tmp_path: Path) -> None:
    r = rig(tmp_path, ProcessRuntime())
    svc = service(
        script='env > "$TMP_OUTPUT_DIR/env.txt"\n',
        environment={"variables": {"COLOR": "blue"}, "secrets": {"TOKEN": "t0psecret"}},
    )
    claim = r.claim_for(svc, "in/photos/cat.png")
    assert r.run(claim, svc, ALLOC).status == SUCCEEDED
    with r.storage.open("out/env.txt") as f:
        env = dict(line.split("=", 1) for line in f.read().decode().splitlines() if "=" in line)
    assert Path(env["INPUT_FILE_PATH"]).name == "cat.png"
    assert env["INPUT_FILE_PATH"].startswith(env["TMP_INPUT_DIR"])
    assert env["STORAGE_OBJECT_KEY"] == "photos/cat.png"  # within the bucket, as OSCAR
    assert env["STORAGE_OBJECT_PATH"] == "in/photos/cat.png"
    assert env["JOB_UUID"] == claim.job.id
    assert env["COLOR"] == "blue" and env["TOKEN"] == "t0psecret"
    assert json.loads(env["EVENT"])["Records"][0]["s3"]["object"]["key"] == "photos/cat.png"
    assert env["EVENT_TIME"].endswith("Z")
    assert "ONDROP_ADMIN_PASSWORD" not in env


def test_a_failing_script_fails_the_job_stores_nothing_and_hides_secrets(tmp_path: Path) -> None:
    r = rig(tmp_path, ProcessRuntime())
    svc = service(
        script='echo "key is $TOKEN"; touch "$TMP_OUTPUT_DIR/partial"; exit 4',
        environment={"secrets": {"TOKEN": "t0psecret"}},
    )
    outcome = r.run(r.claim_for(svc), svc, ALLOC)
    assert (outcome.status, outcome.exit_code, outcome.reason) == (FAILED, 4, "exit status 4")
    assert outcome.log == "key is ***\n"
    assert r.storage.stat("out/partial") is None


def test_output_filters_pick_files_per_output_path(tmp_path: Path) -> None:
    r = rig(tmp_path, ProcessRuntime())
    svc = Service.model_validate(
        {
            "name": "svc",
            "input": [{"path": "in"}],
            "script": 'cd "$TMP_OUTPUT_DIR"; mkdir sub; touch a.json b.png sub/c.png thumb-d.png',
            "output": [
                {"path": "json", "suffix": [".json"]},
                {"path": "png", "suffix": [".png"], "prefix": ["thumb-", "c"]},
            ],
        }
    )
    assert r.run(r.claim_for(svc), svc, ALLOC).status == SUCCEEDED
    assert [o.key for o in r.storage.list("json")] == ["json/a.json"]
    assert [o.key for o in r.storage.list("png")] == ["png/sub/c.png", "png/thumb-d.png"]


def test_a_vanished_input_fails_the_job_saying_so(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service())
    r.storage.delete("in/photo.png")
    outcome = r.run(claim, service(), ALLOC)
    assert outcome.status == FAILED and outcome.reason.startswith("input is gone")


def test_a_storage_failure_while_staging_in_fails_the_attempt(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service())
    assert isinstance(r.storage, MemoryStorage)
    r.storage.fail_with = "connection refused"
    outcome = r.run(claim, service(), ALLOC)
    assert outcome.status == FAILED
    assert outcome.reason == "staging in failed: memory.default: connection refused"


def test_an_invocation_payload_is_the_input_file(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service(), key="", data=b"payload bytes")
    assert r.run(claim, service(), ALLOC).status == SUCCEEDED
    with r.storage.open("out/event-file") as f:
        assert f.read() == b"payload bytes"


def test_sync_jobs_keep_their_outputs_for_the_waiting_client(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service(), key="", data=b"x", priority=SYNC_PRIORITY)
    r.run(claim, service(), ALLOC)
    kept = tmp_path / "results" / claim.job.id
    assert (kept / "output" / "event-file").read_bytes() == b"x"
    assert (kept / "log").read_text() == "copied\n"


def test_a_runtime_that_is_missing_makes_the_job_wait_with_the_reason(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    r.supervisor.runtime_for = lambda s: "no container engine"
    outcome = r.run(r.claim_for(service()), service(), ALLOC)
    assert (outcome.status, outcome.reason) == (FAILED, "no container engine; the job waits")
    assert outcome.cause is Cause.UNAVAILABLE  # tried again later, not counted
    assert r.runtime.calls == []  # type: ignore[attr-defined]


def test_an_interrupted_run_is_reported_as_interrupted(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime(lambda spec: RunResult(None, "stopped", 0.1, Cause.STOPPED)))
    outcome = r.run(r.claim_for(service()), service(), ALLOC)
    assert outcome.status == INTERRUPTED


def test_the_job_runs_with_its_pools_allocation(tmp_path: Path) -> None:
    fake = FakeRuntime()
    r = rig(tmp_path, fake)
    allocation = Allocation(timeout=7, memory=64 * 1024**2, cpu=0.5, gpus=("1", "3"))
    r.run(r.claim_for(service()), service(), allocation)
    spec: RunSpec = fake.calls[0]
    assert (spec.timeout, spec.memory, spec.cpu, spec.gpus) == (7, 64 * 1024**2, 0.5, ("1", "3"))
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1,3"


@pytest.mark.parametrize("name", ["../escape", "sub/../../escape"])
def test_a_symlink_out_of_the_output_folder_is_not_followed(tmp_path: Path, name: str) -> None:
    r = rig(tmp_path, ProcessRuntime())
    secret = tmp_path / "host-secret"
    secret.write_text("do not copy")
    svc = service(script=f'ln -s {secret} "$TMP_OUTPUT_DIR/link"; echo {name} > /dev/null')
    assert r.run(r.claim_for(svc), svc, ALLOC).status == SUCCEEDED
    assert r.storage.stat("out/link") is None


def test_a_store_that_is_down_makes_the_attempt_retryable(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service())
    assert isinstance(r.storage, MemoryStorage)
    r.storage.down = True
    outcome = r.run(claim, service(), ALLOC)
    assert outcome.status == FAILED and outcome.retryable
    assert "the store is down" in outcome.reason


# A script that shows what its work folder holds, then litters it everywhere it can.
LITTER = """#!/bin/sh
listing=$(find . | sort; cat log)
echo "$listing" > "$TMP_OUTPUT_DIR/seen.txt"
stat -c %i "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/inode.txt"
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/copy.txt"
echo "said by job $JOB_UUID"
mkdir -p "$TMPDIR/deep/er" "$TMP_INPUT_DIR/extra" litter-dir
touch "$TMPDIR/deep/er/t" "$TMP_INPUT_DIR/extra/x" litter-file litter-dir/y
touch "$TMP_OUTPUT_DIR/.hidden"
"""


def test_a_kept_work_folder_shows_the_next_job_nothing_of_the_last(tmp_path: Path) -> None:
    r = rig(tmp_path, ProcessRuntime())
    svc = service(script=LITTER, output=[{"path": "out", "suffix": [".txt"]}])
    seen, inodes = [], []
    for n, data in enumerate([b"x" * 100, b"yy", b"zzzz"]):  # each shorter than the last
        claim = r.claim_for(svc, key=f"in/f{n}.png", data=data)
        outcome = r.run(claim, svc, ALLOC)
        assert outcome.status == SUCCEEDED, outcome.reason
        assert outcome.log == f"said by job {claim.job.id}\n"  # its own log alone
        with r.storage.open("out/copy.txt") as f:
            assert f.read() == data  # its own input, whole, and nothing of the last
        with r.storage.open("out/inode.txt") as f:
            inodes.append(f.read())
        with r.storage.open("out/seen.txt") as f:
            # (less the pid file, which the platform may write as the script starts)
            seen.append([x for x in f.read().decode().splitlines() if x != "./pid"])
    assert len(list((tmp_path / "work").iterdir())) == 1  # the same folder, kept
    assert inodes[0] == inodes[1] == inodes[2]  # the first input's file, written over
    other = service(name="other", script="echo other")
    assert r.run(r.claim_for(other), other, ALLOC).log == "other\n"
    assert len(list((tmp_path / "work").iterdir())) == 2  # another service: another folder
    for n, listing in enumerate(seen):
        assert listing == [
            ".",
            "./input",
            f"./input/f{n}.png",
            "./log",
            "./output",
            "./script",
            "./tmp",
        ]  # fmt: skip  (the log was empty: nothing of the last job's came after the listing)


@pytest.mark.parametrize(
    ("tamper", "kept"),
    [
        ('rmdir "$TMPDIR" && ln -s {outside} "$TMPDIR"', False),  # a link for a folder
        ('chmod 0500 "$TMPDIR"', False),  # a folder the next job could not write in
        ("rm script && ln -s {outside}/precious script", True),  # a link for a kept file
        ("rm log && mkfifo log", True),  # a FIFO, which would hold the next job's open
        ("rm pid; mkdir pid", True),  # a folder for the pid file
    ],
)
def test_a_work_folder_a_script_tampered_with_is_not_reused_as_it_is(
    tmp_path: Path, tamper: str, kept: bool
) -> None:
    """Deleted, or the tampered part deleted; nothing outside is followed or touched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    r = rig(tmp_path, ProcessRuntime())
    svc = service(script="#!/bin/sh\n" + tamper.format(outside=outside) + "\n")
    assert r.run(r.claim_for(svc), svc, ALLOC).status == SUCCEEDED
    assert len(list((tmp_path / "work").iterdir())) == kept
    assert (outside / "precious").read_text() == "keep me"
    after = service(script="echo next")
    assert r.run(r.claim_for(after), after, ALLOC).log == "next\n"
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_text() == "keep me"


def test_files_hard_linked_out_of_a_work_folder_keep_what_they_hold(tmp_path: Path) -> None:
    """A script may store its input, or its log, as an output by linking it: the stored
    objects are the work folder's files then, which the next job must not write over."""
    storage = LocalStorage("minio.default", tmp_path / "storage")
    r = rig(tmp_path, ProcessRuntime(), storage)
    link = '#!/bin/sh\necho "log of $JOB_ATTEMPT"\nln "$INPUT_FILE_PATH" log "$TMP_OUTPUT_DIR/"\n'
    svc = service(script=link)
    first = r.run(r.claim_for(svc, key="in/a.txt", data=b"first"), svc, ALLOC)
    assert first.status == SUCCEEDED, first.reason
    stored = tmp_path / "storage" / "out"
    assert (stored / "a.txt").read_bytes() == b"first"
    assert (stored / "log").read_text() == "log of 1\n"
    second = r.run(r.claim_for(svc, key="in/b.txt", data=b"second"), svc, ALLOC)
    assert second.status == SUCCEEDED and second.log == "log of 1\n"
    assert (stored / "a.txt").read_bytes() == b"first"
    assert (stored / "b.txt").read_bytes() == b"second"


def test_a_killed_job_s_folder_is_deleted_not_reused(tmp_path: Path) -> None:
    r = rig(tmp_path, ProcessRuntime())
    svc = service(script="sleep 5")
    outcome = r.run(r.claim_for(svc), svc, Allocation(timeout=0.3))
    assert outcome.status == FAILED and "timed out" in outcome.reason
    assert list((tmp_path / "work").iterdir()) == []  # something of it might still run


def test_an_attempt_taken_over_meanwhile_writes_no_output(tmp_path: Path) -> None:
    r = rig(tmp_path, FakeRuntime())
    claim = r.claim_for(service())
    # Its control plane (or node) was lost while it ran: the job runs again elsewhere.
    r.store.requeue_running("lost while it ran")
    (again,) = r.store.claim(1, {}, time.time())
    assert again.attempt == claim.attempt + 1
    outcome = r.run(claim, service(), ALLOC)  # the late one goes on and ends
    assert outcome.status != SUCCEEDED and "is no longer its running one" in outcome.reason
    assert r.storage.stat("out/photo.png") is None  # it wrote nothing
    assert r.outputs == []
