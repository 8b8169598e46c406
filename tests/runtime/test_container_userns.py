"""Containers never act as root on the host: each runs in a user namespace whose ids are
an unprivileged range of the host's (TEST_IDS here), on every path that starts them (the
OCI runtime, the engine's `run`, a warm container); where that cannot be had, the
runtime says so and refuses its jobs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondrop.runtime.base import RunResult, RunSpec
from ondrop.runtime.container import ContainerRuntime
from ondrop.runtime.engine import Engine, detect
from ondrop.runtime.images import PASSAGES, Images, Passage, _mounted
from ondrop.runtime.oci import FIRST_HOST_ID, ID_BLOCKS, ID_COUNT, Bind, IdMap, bundle_config
from ondrop.runtime.process import AUTO_BLOCKS, AUTO_SIZE, FIRST_AUTO_UID
from tests.support.images import (
    APP_UID,
    BUSYBOX_IMAGE,
    TEST_IDS,
    app_image,
    container_runtime,
)

ROOT = TEST_IDS.host  # the host uid and gid of a container's root


@pytest.fixture(params=["oci", "engine", "warm"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runtime(way: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerRuntime]:
    runtime = container_runtime("podman", tmp_path_factory.mktemp("img"), way != "engine")
    yield runtime
    runtime.close()
    runtime.clean()


def job(
    runtime: ContainerRuntime, way: str, work: Path, script: str, image: str, **env: str
) -> RunResult:
    for folder in ("input", "output", "tmp"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    (work / "script").write_text(script)
    return runtime.run(
        RunSpec(
            job_id=f"job-{time.monotonic_ns()}",
            script=work / "script",
            workdir=work,
            env=env,
            timeout=30,
            log=work / "log",
            image=image,
            service="s",
            warm=30.0 if way == "warm" else 0.0,
        )
    )


def marked(mark: str) -> list[int]:
    """The host pids of the processes whose environment holds `mark`."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark.encode() in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def ids(pid: int) -> tuple[list[str], list[str]]:
    """The Uid and Gid lines of /proc/<pid>/status: real, effective, saved, file system."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line.split()[1:] for line in lines if line.startswith("Uid:"))
    gid = next(line.split()[1:] for line in lines if line.startswith("Gid:"))
    return uid, gid


def test_a_job_is_root_inside_and_an_unprivileged_uid_on_the_host(
    runtime: ContainerRuntime, way: str, busybox: str, tmp_path: Path
) -> None:
    # The job says who it is and what it sees, then waits until the host has looked at it.
    script = (
        "trap 'exit 0' TERM\n"
        "id -u > /ondrop/output/uid\n"
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' > /ondrop/output/seen\n"
        "touch /ondrop/output/made\n"
        "while :; do sleep 0.05; done\n"
    )
    mark = f"ONDROP_TEST_MARK={uuid.uuid4().hex}"
    name, _, value = mark.partition("=")
    work = tmp_path / "work"
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(job(runtime, way, work, script, busybox, **{name: value}))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        # (a warm container's job writes in its container's folder, lent the job's output)
        made = ["work/output/made", "warm-s-*/slot/output/made"]
        while not ([p for m in made for p in tmp_path.glob(m)] and marked(mark)):
            assert thread.is_alive(), (work / "log").read_text()
            assert time.monotonic() < deadline, "the job never got going"
            time.sleep(0.02)
        looked = 0
        for pid in marked(mark):
            try:  # the job's `sleep 0.05`s come and go: one may be gone already
                seen = ids(pid), Path(f"/proc/{pid}/uid_map").read_text().split()
            except FileNotFoundError:
                continue
            assert seen == (
                ([str(ROOT)] * 4, [str(ROOT)] * 4),
                ["0", str(ROOT), str(TEST_IDS.count)],
            )
            looked += 1
        assert looked, "no process of the job was there to look at"
    finally:
        for pid in marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        thread.join(30)
    assert results and results[0].ok, (work / "log").read_text()
    output = work / "output"
    assert (output / "uid").read_text() == "0\n"
    assert (output / "made").stat().st_uid == ROOT  # as the host sees it before stage-out
    assert "pytest" not in (output / "seen").read_text()  # no process of the host's


def test_a_job_cannot_change_host_files_bound_read_only_or_not_its_own(
    runtime: ContainerRuntime, way: str, busybox: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "output").mkdir(parents=True)
    (work / "output" / "hosts.txt").write_text("the host's\n")  # root's, 0644
    script = (
        "echo job >> /ondrop/output/hosts.txt && echo wrote-a-hosts-file\n"
        "echo job >> /ondrop/script && echo wrote-the-script\n"
        "echo job >> /etc/hosts && echo wrote-etc-hosts\n"
        "mount -o remount,rw /ondrop/script && echo remounted\n"
        "mount -t tmpfs none /tmp && echo mounted\n"
        "exit 0\n"
    )
    result = job(runtime, way, work, script, busybox)
    log = (work / "log").read_text()
    assert result.ok, log
    assert (work / "output" / "hosts.txt").read_text() == "the host's\n", log
    if way != "warm":  # (a warm container's job lends its script, emptied afterwards)
        assert (work / "script").read_text() == script
    for done in ("wrote-a-hosts-file", "wrote-the-script", "wrote-etc-hosts", "mounted"):
        assert done not in log.split(), log


def test_a_job_can_make_no_device_and_give_files_only_to_ids_of_its_range(
    runtime: ContainerRuntime, way: str, busybox: str, tmp_path: Path
) -> None:
    script = (
        "mknod /tmp/mem c 1 1 && echo made-a-device\n"
        "touch /ondrop/output/far /ondrop/output/given\n"
        "chown 70000:70000 /ondrop/output/far && echo gave-it-away\n"
        "chown 1000:1000 /ondrop/output/given\n"
    )
    work = tmp_path / "work"
    result = job(runtime, way, work, script, busybox)
    log = (work / "log").read_text()
    assert result.ok, log
    assert "made-a-device" not in log.split() and "gave-it-away" not in log.split(), log
    given = (work / "output" / "given").stat()
    assert (given.st_uid, given.st_gid) == (ROOT + 1000, ROOT + 1000)
    assert (work / "output" / "far").stat().st_uid == ROOT


def test_a_setuid_program_a_job_makes_is_not_one_of_the_hosts_root(
    runtime: ContainerRuntime, way: str, busybox: str, tmp_path: Path
) -> None:
    script = "cp /bin/busybox /ondrop/output/sh && chmod 4755 /ondrop/output/sh"
    work = tmp_path / "work"
    result = job(runtime, way, work, script, busybox)
    assert result.ok, (work / "log").read_text()
    made = (work / "output" / "sh").stat()
    assert made.st_mode & stat.S_ISUID  # the job may make one, but of its own root's
    assert (made.st_uid, made.st_gid) == (ROOT, ROOT)


def test_an_image_whose_user_is_1000_reads_its_home_and_writes_its_outputs(
    runtime: ContainerRuntime, way: str, tmp_path: Path
) -> None:
    image = app_image(tmp_path)
    script = "id -u > /ondrop/output/uid; cat /home/app/notes > /ondrop/output/notes; touch /tmp/t"
    result = job(runtime, way, tmp_path / "work", script, image)
    assert result.ok, (tmp_path / "work" / "log").read_text()
    output = tmp_path / "work" / "output"
    assert (output / "uid").read_text() == f"{APP_UID}\n"
    assert (output / "notes").read_text() == "mine\n"
    assert (output / "uid").stat().st_uid == ROOT + APP_UID
    assert output.stat().st_uid == 0  # the folder is the platform's again


def test_unpacked_images_belong_to_the_range_and_are_reached_without_opening_the_data_folder(
    busybox: str, tmp_path: Path
) -> None:
    image_ref = app_image(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    engine = detect("podman")
    assert engine is not None
    images = Images(engine, data / "images", pull="never", idmap=TEST_IDS)
    try:
        rootfs = images.rootfs(images.image(image_ref))
        assert rootfs.is_relative_to(PASSAGES) and _mounted(rootfs.parents[1])
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        home = (rootfs / "home" / "app").stat()
        assert (home.st_uid, home.st_gid) == (ROOT + APP_UID, ROOT + APP_UID)
        assert (rootfs / "etc" / "passwd").stat().st_uid == ROOT
        suid = (rootfs / "bin" / "suid").stat()
        assert suid.st_uid == ROOT and not suid.st_mode & (stat.S_ISUID | stat.S_ISGID)
    finally:
        images.close()
    assert not _mounted(rootfs.parents[1])


def test_the_passage_a_dead_platform_left_is_removed_once_its_data_folder_is_gone(
    tmp_path: Path,
) -> None:
    dead = Passage(tmp_path / "gone" / "images", ROOT)  # below a folder only root may enter
    assert dead._finalizer is not None
    dead._finalizer.detach()  # its platform was killed: nothing unmounts it
    assert dead.path.is_relative_to(PASSAGES) and _mounted(dead.path)
    shutil.rmtree(tmp_path / "gone")
    live = Passage(tmp_path / "live" / "images", ROOT)
    try:
        assert not _mounted(dead.path) and not dead.path.parent.exists()
        assert _mounted(live.path)
    finally:
        live.close()
    assert not _mounted(live.path) and not live.path.parent.exists()


def test_docker_without_a_user_namespace_refuses_jobs_and_says_why(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    runtime = container_runtime("docker", tmp_path_factory.mktemp("img"), False, refused=True)
    try:
        work = tmp_path / "work"
        result = job(runtime, "engine", work, "id -u > /ondrop/output/uid", BUSYBOX_IMAGE)
        if runtime.problem:
            why = "docker's daemon runs containers without a user namespace (no userns-remap)"
            assert runtime.problem.startswith(why)
            assert f"container jobs are refused: {why}" in runtime.describe()
            assert result.reason.startswith(f"container jobs are refused here: {why}")
            assert not (work / "output" / "uid").exists()  # it never ran
        else:  # a daemon with userns-remap: a job's root is not the host's
            assert result.ok, (work / "log").read_text()
            assert "user namespace of" in runtime.describe()
            assert (work / "output" / "uid").stat().st_uid != 0
    finally:
        runtime.clean()


def test_a_runtime_that_cannot_isolate_says_so_and_refuses_every_job(tmp_path: Path) -> None:
    engine = Engine("podman", "/nonexistent/podman")  # never asked: the job is refused first
    images = Images(engine, tmp_path / "images", pull="never")
    runtime = ContainerRuntime(
        engine, images, None, "ondrop-x-", TEST_IDS, problem="this kernel has no user namespaces"
    )
    assert runtime.describe() == (
        "podman images; container jobs are refused: this kernel has no user namespaces"
    )
    result = job(runtime, "engine", tmp_path / "work", "true", "localhost/anything:1")
    assert result.reason == "container jobs are refused here: this kernel has no user namespaces"


def test_the_user_namespace_is_refused_where_its_ids_are_a_users_subordinate_ids(
    tmp_path: Path,
) -> None:
    (tmp_path / "subuid").write_text(f"root:100000:65536\nmallory:{ROOT + 60000}:65536\n")
    (tmp_path / "subgid").write_text("root:100000:65536\n")
    problem = TEST_IDS.problem((str(tmp_path / "subuid"), str(tmp_path / "subgid")))
    assert problem == (
        f"the containers' host ids {TEST_IDS} overlap mallory's subordinate ids "
        f"{ROOT + 60000}-{ROOT + 60000 + 65535} in {tmp_path / 'subuid'}, whose own "
        "containers could then reach ondrop's"
    )
    assert TEST_IDS.problem((str(tmp_path / "subgid"),)) is None


def test_each_data_folder_gets_a_block_of_its_own_clear_of_job_uids_and_subuids() -> None:
    blocks = {IdMap.auto(tag).host for tag in range(ID_BLOCKS)}
    assert len(blocks) == ID_BLOCKS  # no two tags below ID_BLOCKS share one
    last_job_uid = FIRST_AUTO_UID + AUTO_BLOCKS * AUTO_SIZE - 1
    assert min(blocks) == FIRST_HOST_ID > last_job_uid
    assert max(blocks) + ID_COUNT - 1 < 2**32 - 1  # (uid_t)-1 is no uid
    assert TEST_IDS.host > max(blocks) + ID_COUNT - 1  # the tests' range is no platform's


def test_the_bundle_asks_for_a_user_namespace_and_the_hosts_sys_with_its_network(
    tmp_path: Path,
) -> None:
    def config(network: bool) -> dict[str, object]:
        return bundle_config(
            rootfs=tmp_path,
            args=["/bin/sh"],
            env={},
            cwd="/",
            binds=[Bind(tmp_path, "/in", readonly=True)],
            hostname="h",
            cgroups_path="/ondrop/x/job",
            network=network,
            idmap=IdMap(ROOT),
        )

    alone = config(network=False)
    linux = alone["linux"]
    assert isinstance(linux, dict)
    assert {"type": "user"} in linux["namespaces"]
    mapping = [{"containerID": 0, "hostID": ROOT, "size": 65536}]
    assert linux["uidMappings"] == linux["gidMappings"] == mapping
    mounts = alone["mounts"]
    assert isinstance(mounts, list)
    assert {"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]} in mounts  # fmt: skip
    shared = config(network=True)
    mounts, linux = shared["mounts"], shared["linux"]
    assert isinstance(mounts, list) and isinstance(linux, dict)
    assert {"destination": "/sys", "type": "bind", "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]} in mounts  # fmt: skip
    assert "/sys/fs/cgroup" in linux["maskedPaths"]


def test_two_platforms_on_one_machine_never_share_a_block_of_host_ids() -> None:
    tag = uuid.uuid4().int % ID_BLOCKS  # a data folder's hash
    first = IdMap.claim(tag)
    try:
        second = IdMap.claim(tag)  # another platform whose data folder hashes the same
        try:
            assert first == IdMap.auto(tag)
            assert second != first and second.host % ID_COUNT == first.host % ID_COUNT
        finally:
            second.release()
        first.release()
        assert IdMap.claim(tag) == first  # given back: the folder's own block again
    finally:
        first.release()
