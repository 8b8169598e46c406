"""Nobody gets in through a link: a user who can write into a `local.<id>` input folder
never makes a job read what a link points to, however fast the link changes; a link shows
in the service's job list as refused, with why."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ondrop.fdl.loader import parse_service
from ondrop.platform import Platform
from ondrop.settings import Settings
from ondrop.storage import beneath
from ondrop.storage.local import LINK, LocalStorage
from ondrop.store.base import QUEUED, REFUSED, RUNNING, SUCCEEDED

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
KEEP_EACH = (
    'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$JOB_UUID"'  # one output per job, none overwritten
)
ATTACKER = 2_100_000_777  # an unprivileged uid of no one's
SECRET = b"the root-only secret 5b1f0c"
FLIPPING = 3.0  # seconds the attacker flips links for


@pytest.fixture(params=["openat2", "walk"])
def platform(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    """The platform, its local storage resolving keys with the kernel's openat2, or with
    the walk that kernels without it get."""
    if request.param == "walk":
        monkeypatch.setattr(beneath, "SYS_OPENAT2", None)
    p = Platform(settings)
    local = p.providers.get("local.default")
    if not isinstance(local, LocalStorage) or local.resolver != request.param:
        p.store.close()
        pytest.skip(f"this kernel has no {request.param}")
    p.start()
    try:
        yield p
    finally:
        p.stop()


def copying(name: str, script: str = COPY) -> list[object]:
    raw = {"name": name, "script": script, "input": [{"path": f"{name}/in"}],
           "output": [{"path": f"{name}/out"}]}  # fmt: skip
    return [parse_service(raw)[0]]


def settled(platform: Platform, service: str, timeout: float = 120) -> dict[str, int]:
    """The service's job counts once none is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = platform.store.count_jobs(service)
        if counts and not counts.get(QUEUED) and not counts.get(RUNNING):
            return counts
        time.sleep(0.05)
    raise AssertionError(f"{service}: still busy: {platform.store.count_jobs(service)}")


def as_attacker(action: object, *args: object) -> None:
    """Run `action(*args)` in a child process as an unprivileged uid, and wait for it."""
    with warnings.catch_warnings():  # forking a threaded process: the child only makes syscalls
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            action(*args)  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker's child failed"


def flip(inbox: int, pub: int, secret: str, seconds: float) -> None:
    """The attack: `bait` in the input folder is a link flipped between a harmless file and a
    root-only one, as fast as it goes; the harmless file changes every few milliseconds (a
    new version for the old code to start a job for), and plain files keep arriving."""
    end = time.monotonic() + seconds
    harmless = "../pub/harmless.txt"
    n = 0
    next_change = 0.0
    while (now := time.monotonic()) < end:
        if now >= next_change:
            n += 1
            fd = os.open(".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=pub)
            os.write(fd, b"harmless %d\n" % n)
            os.close(fd)
            os.rename(".new", "harmless.txt", src_dir_fd=pub, dst_dir_fd=pub)
            if n % 10 == 0:  # a plain file, written under a dot name and renamed when done
                fd = os.open(".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=inbox)
                os.write(fd, b"plain %d\n" % n)
                os.close(fd)
                os.rename(".part", f"plain-{n}.txt", src_dir_fd=inbox, dst_dir_fd=inbox)
            next_change = now + 0.005
        for _ in range(20):
            for target in (harmless, secret):
                os.symlink(target, ".flip", dir_fd=inbox)
                os.rename(".flip", "bait", src_dir_fd=inbox, dst_dir_fd=inbox)
        time.sleep(0.0002)  # leave the platform some CPU on a small machine


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the attacker is another uid")
def test_a_link_flipped_between_a_harmless_file_and_a_root_only_one_never_leaks_it(
    platform: Platform, settings: Settings, tmp_path: Path
) -> None:
    platform.apply(copying("race", KEEP_EACH))  # type: ignore[arg-type]
    storage = Path(settings.data) / "storage"
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    (storage / "race" / "pub").mkdir()
    (storage / "race" / "pub" / "harmless.txt").write_text("harmless 0\n")
    for folder in (storage / "race" / "in", storage / "race" / "pub"):
        os.chown(folder, ATTACKER, ATTACKER)
    # The data folder is private: the attacker gets the two folders it may write to as
    # descriptors, as if it could reach them.
    inbox = os.open(storage / "race" / "in", os.O_RDONLY | os.O_DIRECTORY)
    pub = os.open(storage / "race" / "pub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        as_attacker(flip, inbox, pub, str(secret), FLIPPING)
    finally:
        os.close(inbox)
        os.close(pub)
    counts = settled(platform, "race")
    outputs = sorted((storage / "race" / "out").iterdir())
    leaked = [p.name for p in outputs if SECRET in p.read_bytes()]
    logs = [a.log for j in platform.store.jobs("race") for a in platform.store.attempts(j.id)]
    assert leaked == [] and not any(SECRET.decode() in log for log in logs), counts
    # The attack was on: plain files made jobs, and the link was seen and refused.
    assert counts.get(SUCCEEDED, 0) >= 1 and outputs, counts
    refused = [j for j in platform.store.jobs("race") if j.status == REFUSED]
    assert refused and {j.input_key for j in refused} == {"race/in/bait"}
    assert all(j.attempts == 0 and LINK in j.reason for j in refused)


def test_a_link_to_another_services_outputs_is_refused_and_shown_with_the_reason(
    platform: Platform, settings: Settings, api: httpx.Client
) -> None:
    platform.apply([*copying("a"), *copying("b")])  # type: ignore[list-item]
    storage = Path(settings.data) / "storage"
    (storage / "a" / "in" / "report.txt").write_text("a's own result")
    assert settled(platform, "a") == {SUCCEEDED: 1}
    assert (storage / "a" / "out" / "report.txt").exists()
    (storage / "b" / "in" / "steal").symlink_to("../../a/out/report.txt")
    (storage / "b" / "in" / "dir").symlink_to("../../a/out")
    deadline = time.monotonic() + 30
    while len(platform.store.jobs("b")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    settled(platform, "b")
    jobs = api.get("/system/logs/b").json()["jobs"]
    assert sorted((j["input"], j["status"], j["attempts"]) for j in jobs.values()) == [
        ("b/in/dir", "Refused", 0),
        ("b/in/steal", "Refused", 0),
    ]
    assert all(j["reason"] == LINK for j in jobs.values())
    assert list((storage / "b" / "out").iterdir()) == []
    refused = api.get("/system/logs/b", params={"status": "Refused"}).json()["jobs"]
    assert sorted(refused) == sorted(jobs)
    # Seen again (a rescan, as after a restart): the same link is still one refusal.
    platform.watchers["local.default"].rescan()  # type: ignore[attr-defined]
    assert sorted(api.get("/system/logs/b").json()["jobs"]) == sorted(jobs)
