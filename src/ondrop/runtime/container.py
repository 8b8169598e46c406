"""`container`: the job's script runs inside the service's image, isolated and limited.

Fast path (root, with crun or runc): each image is unpacked once and shared read-only;
a job is an OCI bundle in its work folder, started by the OCI runtime directly with its
own namespaces (no network unless asked), a memory limit, a CPU quota and a pids limit.
Otherwise `podman run` / `docker run` with the same limits. Either way the container has
a user namespace: its root is an unprivileged host uid (IdMap), and where that cannot be
had the runtime refuses its jobs, saying why. The supervisor stays outside: images need
nothing of ondrop in them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from ondrop.errors import NotFoundError, OndropError
from ondrop.jobs import Cause
from ondrop.quantity import format_bytes
from ondrop.runtime.base import (
    RunResult,
    RunSpec,
    Runtime,
    Served,
    ended,
    script_command,
    wait_exit,
)
from ondrop.runtime.cgroups import JobCgroup, remove_all
from ondrop.runtime.engine import Engine, Image
from ondrop.runtime.images import Images
from ondrop.runtime.oci import (
    Bind,
    IdMap,
    OciRuntime,
    bundle_config,
    gpu_devices,
    seccomp_profile,
    system_mounts,
)
from ondrop.runtime.served import ServedBundle, ServedEngine
from ondrop.runtime.warm import CLEARED, WarmContainer, WarmContainers

log = logging.getLogger(__name__)

# Where the job's folders appear inside the container.
INSIDE = {
    "input": "/ondrop/input",
    "output": "/ondrop/output",
    "tmp": "/tmp",
    "script": "/ondrop/script",
}
HOSTS, RESOLVER = "/etc/hosts", "/etc/resolv.conf"  # files of the host's (or ours) bound in
# Every place a container of a job or a warm one mounts something (True: a file), made
# when its image is unpacked so that no OCI runtime makes one in the shared root.
MOUNT_POINTS = {
    **{mount["destination"]: False for mount in system_mounts()},
    **dict.fromkeys(CLEARED.values(), False),
    **{inside: part == "script" for part, inside in INSIDE.items()},
    HOSTS: True,
    RESOLVER: True,
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIDS_LIMIT = 1024
FIRST_UID = 65532  # a warm container's first process runs as this user (65531 if taken)
CONTAINER_FILE = "container"  # in the work folder: what to remove if the platform dies
KILL_WAIT = 10.0


class ContainerRuntime(Runtime):
    name = "container"

    def __init__(
        self,
        engine: Engine,
        images: Images,
        oci: OciRuntime | None,
        prefix: str,
        idmap: IdMap | None = None,
        problem: str = "",
    ) -> None:
        self.engine = engine
        self.images = images
        self.oci = oci
        self.prefix = prefix  # names this platform's containers: ondrop-<data folder hash>-
        self.seccomp = seccomp_profile()  # podman's syscall filter, where it is installed
        # The containers' user namespace: the host ids of their ids (the fast path's, and
        # podman's as root), and the options and words of the engine's.
        self.idmap = idmap
        self._userns: list[str] = []
        self.isolation = idmap.describe() if idmap is not None else ""
        # Why no job may run (a container would be less isolated than documented), or "".
        self.problem = problem
        if not problem and oci is not None and idmap is None:
            self.problem = "no host ids are given for the containers' user namespace"
        elif not problem and oci is None:
            try:
                self._userns, self.isolation = engine.user_namespace(idmap)
            except OndropError as exc:
                self.problem = str(exc)
        if self.problem:
            log.error("container runtime: no container job will run: %s", self.problem)
        # Containers kept between jobs, where ondrop starts them itself.
        self.warm = WarmContainers(oci) if oci is not None else None
        self._cgroupfs: bool | None = None  # may the engine's containers go in ours
        self._running: dict[str, str] = {}  # job id -> container name
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.problem:
            return f"{self.engine.name} images; container jobs are refused: {self.problem}"
        how = f"started with {self.oci.name}" if self.oci else f"started with {self.engine.name}"
        return f"{self.engine.name} images, {how}; {self.isolation}"

    def inside(self, workdir: Path, path: Path) -> str:
        first, *rest = path.relative_to(workdir).parts
        return "/".join([INSIDE[first], *rest])

    # -- running ------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunResult:
        started = time.monotonic()
        if self.problem:
            return RunResult(
                None, f"container jobs are refused here: {self.problem}", 0.0, Cause.INTERNAL
            )
        try:
            image = self.images.image(spec.image)
            args = self._command(spec, image)
        except NotFoundError as exc:  # the image is not here (yet): the job waits for it
            waited = f"{exc}; the job waits until it is here"
            return RunResult(None, waited, time.monotonic() - started, Cause.UNAVAILABLE)
        except OndropError as exc:
            return RunResult(None, str(exc), time.monotonic() - started, Cause.INTERNAL)
        env = _environment(image, spec)
        name = self.prefix + spec.job_id
        warm = spec.warm > 0 and self.warm is not None
        if not warm:  # a warm container has its own folder to be found by
            (spec.workdir / CONTAINER_FILE).write_text(
                json.dumps({"name": name, "via": "oci" if self.oci else "engine"})
            )
        with self._lock:
            self._running[spec.job_id] = name
        try:
            if warm:
                code, timed_out, kills = self._run_warm(spec, image, args, env)
            elif self.oci is not None:
                code, timed_out, kills = self._run_bundle(spec, image, name, args, env)
            else:
                code, timed_out, kills = self._run_engine(spec, image, name, args, env)
        except OndropError as exc:
            return RunResult(None, str(exc), time.monotonic() - started, Cause.INTERNAL)
        finally:
            with self._lock:
                self._running.pop(spec.job_id, None)
                stopped = spec.job_id in self._stopped
                self._stopped.discard(spec.job_id)
        # A process killed for the memory limit fails the job, whatever became of the
        # rest of it (a script that goes on after its child was killed exits 0).
        if kills and spec.memory is not None:
            _log_killed(spec.log, kills, spec.memory)
        return ended(
            code,
            time.monotonic() - started,
            spec.timeout,
            stopped=stopped,
            timed_out=timed_out,
            memory=spec.memory if kills else None,
        )

    def _command(self, spec: RunSpec, image: Image) -> list[str]:
        if spec.script.read_text().strip():
            return script_command(spec.script, INSIDE["script"])
        command = image.entrypoint + image.cmd
        if not command:
            raise OndropError(f"service has no script and image {image.ref} has no command")
        return command

    def _binds(self, spec: RunSpec) -> list[Bind]:
        work = spec.workdir
        return [
            Bind(work / "input", INSIDE["input"], readonly=True),
            Bind(work / "output", INSIDE["output"]),
            Bind(work / "tmp", INSIDE["tmp"]),
            Bind(work / "script", INSIDE["script"], readonly=True),
        ]

    def _run_bundle(
        self, spec: RunSpec, image: Image, name: str, args: list[str], env: dict[str, str]
    ) -> tuple[int, bool, int]:
        assert self.oci is not None and self.idmap is not None
        rootfs = self.images.rootfs(image, MOUNT_POINTS)
        user = _user(image.user, rootfs)
        cgroup = JobCgroup(name, spec.memory)
        cgroup.create()
        bundle = spec.workdir / "bundle"
        bundle.mkdir(exist_ok=True)
        binds = self._binds(spec)
        config = self._config(spec, image, rootfs, user, binds, args, env, cgroup, spec.workdir)
        (bundle / "config.json").write_text(json.dumps(config))
        timed_out = False
        code: int | None = None
        lent = [spec.workdir / "output", spec.workdir / "tmp"]
        try:
            for folder in lent:  # the image's user, as the host knows it, writes there
                os.chown(folder, *self.idmap.owner(user))
            with spec.log.open("ab") as log:
                proc = self.oci.start(bundle, name, log)
            status = wait_exit(proc, spec.timeout)
            if status is None:
                timed_out = True
                self.oci.kill(name)
                status = _wait_or_kill(proc)
            code = status
            kills = cgroup.oom_kills()
        finally:
            if code != 0:  # after a clean exit `run` has removed the container itself
                self.oci.delete(name)
            cgroup.remove()
            _take_back(lent)
        return code, timed_out, kills

    def _config(
        self,
        spec: RunSpec,
        image: Image,
        rootfs: Path,
        user: tuple[int, int],
        binds: list[Bind],
        args: list[str],
        env: dict[str, str],
        cgroup: JobCgroup,
        folder: Path,
    ) -> dict[str, Any]:
        """The bundle of a container in `cgroup` for the job of `spec` (for a warm one,
        the first of its jobs): `binds`, and its own hosts file in `folder`."""
        hostname = cgroup.name.removeprefix(self.prefix)[:63]
        hosts = folder / "hosts"
        hosts.write_text(f"127.0.0.1 localhost {hostname}\n::1 localhost\n")
        binds = [*binds, Bind(hosts, HOSTS, readonly=True)]
        if spec.network and Path(RESOLVER).exists():
            binds.append(Bind(Path(RESOLVER), RESOLVER, readonly=True))
        return bundle_config(
            rootfs=rootfs,
            args=args,
            env=env,
            cwd=image.workdir or "/",
            binds=binds,
            hostname=hostname,
            cgroups_path=cgroup.container_path,
            user=user,
            cpu=spec.cpu,
            pids=PIDS_LIMIT,
            network=spec.network,
            seccomp=self.seccomp,
            devices=gpu_devices(spec.gpus),
            idmap=self.idmap,
        )

    def _run_warm(
        self, spec: RunSpec, image: Image, args: list[str], env: dict[str, str]
    ) -> tuple[int, bool, int]:
        """Run the job in a warm container of its service: an idle one, or a new one kept
        for the next job afterwards (see warm.py)."""
        assert self.oci is not None and self.warm is not None
        rootfs = self.images.rootfs(image, MOUNT_POINTS)
        user = _user(image.user, rootfs)
        key = _warm_key(spec, image, user)
        box = self.warm.take(key) or self._start_warm(spec, image, rootfs, user, key)
        with self._lock:
            self._running[spec.job_id] = box.name
            stopped = spec.job_id in self._stopped
        if stopped:  # while its container was found or started: it never runs
            self.warm.give(box)
            return -9, False, 0
        timed_out = False
        kills = 0
        code: int | None = None
        try:
            assert self.idmap is not None
            os.chown(spec.workdir / "output", *self.idmap.owner(user))
            process = {**box.process, "args": args, "env": [f"{k}={v}" for k, v in env.items()]}
            process_file = spec.workdir / "process.json"
            fd = os.open(process_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:  # the environment holds the service's secrets
                json.dump(process, f)
            box.enter(spec.workdir)
            with spec.log.open("ab") as log:
                proc = self.oci.exec(box.name, process_file, log)
            status = wait_exit(proc, spec.timeout)
            if status is None:
                timed_out = True
                self.oci.kill(box.name)
                status = _wait_or_kill(proc)
            code = status
        finally:
            with self._lock:  # from here a stop of this job no longer reaches the container
                self._running.pop(spec.job_id, None)
                stopped = spec.job_id in self._stopped
            kills = box.cgroup.oom_kills()
            reuse = (
                code is not None
                and code not in (137, -9)
                and not stopped
                and not kills
                and box.only_first()
            )
            if not reuse:
                # Nothing of the job may run on while its outputs are taken out: a process
                # left behind could swap the output folder for a link to the host's files.
                self.oci.delete(box.name)
            try:
                emptied = box.leave(spec.workdir)
            except OSError:
                emptied = False
            _take_back([spec.workdir / "output"])
            if reuse and emptied:
                self.warm.give(box)
            else:
                self.warm.discard(box)
        return code, timed_out, kills

    def _start_warm(
        self, spec: RunSpec, image: Image, rootfs: Path, user: tuple[int, int], key: Hashable
    ) -> WarmContainer:
        assert self.oci is not None and self.idmap is not None and self.warm is not None
        name = f"{self.prefix}warm-{spec.service}-{uuid.uuid4().hex[:8]}"
        # Among the work folders, so that a platform that died has it removed on restart.
        folder = spec.workdir.parent / name.removeprefix(self.prefix)
        cgroup = JobCgroup(name, spec.memory)
        try:
            folder.mkdir()
            (folder / CONTAINER_FILE).write_text(json.dumps({"name": name, "via": "oci"}))
            for part in CLEARED:
                (folder / part).mkdir()
            (folder / "shm").chmod(0o1777)
            for part in ("slot", "tmp"):
                os.chown(folder / part, *self.idmap.owner(user))
            os.chown(folder / "run", *self.idmap.owner((0, 0)))  # the container's root's
            cgroup.create()
            binds = [Bind(folder / part, inside) for part, inside in CLEARED.items()]
            config = self._config(spec, image, rootfs, user, binds, [], {}, cgroup, folder)
            # /run and /dev/shm are the folders above, emptied between jobs, instead of the
            # usual tmpfs; the rest of /dev cannot be written.
            config["mounts"] = [
                m
                for m in config["mounts"]
                if m["type"] == "bind" or m["destination"] not in CLEARED.values()
            ]
            config["linux"]["readonlyPaths"] = [*config["linux"]["readonlyPaths"], "/dev"]
            job_process = copy.deepcopy(config["process"])  # each job's starts from it
            # The first process only waits. It runs as a user of its own without any
            # capability, so that no job (whatever its user) can trace it to run something
            # of its own in it between jobs.
            first = FIRST_UID if user[0] != FIRST_UID else FIRST_UID - 1
            config["process"].update(
                args=["sleep", "2147483647"],
                env=[f"PATH={DEFAULT_PATH}"],
                cwd="/",
                user={"uid": first, "gid": first},
                capabilities={k: [] for k in ("bounding", "effective", "permitted")},
            )
            (folder / "bundle").mkdir()
            (folder / "bundle" / "config.json").write_text(json.dumps(config))
            pid = self.oci.start_detached(folder / "bundle", name)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            self.oci.delete(name)
            cgroup.remove()
            shutil.rmtree(folder, ignore_errors=True)
            raise OndropError(
                f"could not start a warm container of image {image.ref} ({exc}); the image "
                "needs a `sleep` command, or leave `warm` out to start a container per job"
            ) from None
        log.debug("warm container %s started for service %s", name, spec.service)
        box = WarmContainer(name, key, folder, pid, job_process, cgroup, spec.warm)
        self.warm.started(box)
        return box

    def keep_ready(self, spec: RunSpec, count: int) -> str | None:
        if self.warm is None:
            if count == 0:
                return None
            return (
                "containers are kept ready only on the fast path (crun or runc, as root); "
                f"here ({self.describe()}) each job starts a container of its own"
            )
        if count == 0:
            self.warm.keep_none(spec.service)
            return None
        try:
            image = self.images.image(spec.image)
            rootfs = self.images.rootfs(image, MOUNT_POINTS)
            user = _user(image.user, rootfs)
        except (OndropError, OSError) as exc:
            return f"{exc}; tried again later"
        key = _warm_key(spec, image, user)
        self.warm.keep_ready(
            spec.service, key, count, lambda: self._start_warm(spec, image, rootfs, user, key)
        )
        return None

    def _run_engine(
        self, spec: RunSpec, image: Image, name: str, args: list[str], env: dict[str, str]
    ) -> tuple[int, bool, int]:
        if self.engine.name == "docker" and args[0] == "/bin/sh":
            # Docker keeps stdout and stderr apart, so their lines would reach the log out of
            # order: the script's shell sends both to one stream first.
            args = ["/bin/sh", "-c", 'exec 2>&1; exec /bin/sh "$@"', "sh", *args[1:]]
        env_file, multiline = _env_file(spec.workdir, env)
        # A user of the image's, whoever it is, must be able to write its outputs.
        (spec.workdir / "output").chmod(0o777)
        (spec.workdir / "tmp").chmod(0o1777)
        command = [*self._engine_run(spec, name, args[0], env_file, multiline), "--read-only"]
        if not spec.network:
            command += ["--network", "none"]
        cgroup = self._engine_cgroup(name, spec.memory)
        if cgroup is not None:  # the limit is on our cgroup above the container's
            command += ["--cgroup-parent", cgroup.path]
            if self.engine.name == "podman":  # conmon stays out of the job's limit
                command += ["--cgroups", "no-conmon"]
        elif spec.memory is not None:
            command += ["--memory", str(spec.memory), "--memory-swap", str(spec.memory)]
        for gpu in spec.gpus:
            # With NVIDIA's CDI spec installed the engine also mounts the driver's libraries.
            cdi = any(Path(d, "nvidia.yaml").exists() for d in ("/etc/cdi", "/var/run/cdi"))
            command += ["--device", f"nvidia.com/gpu={gpu}" if cdi else f"/dev/nvidia{gpu}"]
        for bind in self._binds(spec):
            command += ["-v", f"{bind.source}:{bind.destination}:{'ro' if bind.readonly else 'rw'}"]
        command += [image.id, *args[1:]]
        timed_out = False
        try:
            with spec.log.open("ab") as log:
                proc = subprocess.Popen(
                    command,
                    env={**os.environ, **multiline},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            status = wait_exit(proc, spec.timeout)
            if status is None:
                timed_out = True
                subprocess.run([self.engine.binary, "kill", name], capture_output=True, timeout=30)
                status = _wait_or_kill(proc)
            code = status
            kills = cgroup.oom_kills() if cgroup is not None else 0
            state = subprocess.run(
                [self.engine.binary, "inspect", name, "--format", "{{.State.OOMKilled}}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if state.stdout.strip() == "true":
                kills = max(kills, 1)
            elif cgroup is None and code == 137 and not timed_out and spec.memory is not None:
                # Without a cgroup of ours to count kills, and engines do not always notice
                # one (podman on cgroup v1): a SIGKILL we did not send is taken for one.
                kills = 1
        finally:
            self.engine.remove([name])
            if cgroup is not None:
                cgroup.remove()
        return code, timed_out, kills

    def _engine_run(
        self, spec: RunSpec, name: str, entrypoint: str, env_file: Path, multiline: dict[str, str]
    ) -> list[str]:
        """`<engine> run` with what every container of ours gets, job or server: its name
        and environment, no new privileges, a cap on processes, its cpu, and the user
        namespace. Variables in `multiline` come from the engine's own environment."""
        command = [
            self.engine.binary,
            "run",
            "--name",
            name,
            "--env-file",
            str(env_file),
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            str(PIDS_LIMIT),
            "--entrypoint",
            entrypoint,
            *(arg for variable in multiline for arg in ("-e", variable)),
            *self._userns,
        ]
        if spec.cpu is not None:
            command += ["--cpus", f"{spec.cpu:g}"]
        return command

    def _engine_cgroup(self, name: str, memory: int | None) -> JobCgroup | None:
        """A cgroup of ours holding the job's memory limit, for the engine to put the
        container in, so that kills for the limit are counted: where the engine manages
        cgroups as folders (cgroupfs) and ondrop may make them (root). None: the engine
        enforces the limit alone."""
        if memory is None:
            return None
        if self._cgroupfs is None:
            key = {"podman": "{{.Host.CgroupManager}}", "docker": "{{.CgroupDriver}}"}
            info = subprocess.run(
                [self.engine.binary, "info", "--format", key.get(self.engine.name, "")],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self._cgroupfs = info.stdout.strip() == "cgroupfs"
        if not self._cgroupfs:
            return None
        cgroup = JobCgroup(name, memory)
        try:
            cgroup.create()
        except OSError as exc:
            log.debug("no cgroup of ours for %s (%s): the engine enforces its limit", name, exc)
            cgroup.remove()
            return None
        return cgroup

    # -- exposed services -----------------------------------------------------------------
    def serve(self, spec: RunSpec) -> Served:
        """A replica of an exposed service (see exposed.py): its server in a network of its
        own, /tmp and its root writable, limited as a job is; what it prints is its log."""
        if self.problem:
            raise OndropError(f"containers are refused here: {self.problem}")
        image = self.images.image(spec.image)  # NotFoundError: it waits for the image
        args = self._command(spec, image)
        env = _environment(image, spec)
        name = self.prefix + spec.job_id
        folder = spec.workdir
        (folder / CONTAINER_FILE).write_text(
            json.dumps({"name": name, "via": "oci" if self.oci else "engine"})
        )
        try:
            if self.oci is not None:
                return self._serve_bundle(spec, image, name, args, env)
            return self._serve_engine(spec, image, name, args, env)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            self._remove(name)
            raise OndropError(f"could not start a container of image {image.ref}: {exc}") from None
        except BaseException:  # (its root may be mounted already)
            self._remove(name)
            raise

    def _serve_bundle(
        self, spec: RunSpec, image: Image, name: str, args: list[str], env: dict[str, str]
    ) -> Served:
        assert self.oci is not None and self.idmap is not None
        root = self.images.writable_root(image, name, MOUNT_POINTS)
        user = _user(image.user, root)
        os.chown(spec.workdir / "tmp", *self.idmap.owner(user))
        cgroup = JobCgroup(name, spec.memory)
        cgroup.create()
        binds = [
            Bind(spec.workdir / "tmp", INSIDE["tmp"]),
            Bind(spec.script, INSIDE["script"], readonly=True),
        ]
        config = self._config(spec, image, root, user, binds, args, env, cgroup, spec.workdir)
        config["root"]["readonly"] = False
        (spec.workdir / "bundle").mkdir()
        (spec.workdir / "bundle" / "config.json").write_text(json.dumps(config))
        pid = self.oci.start_detached(spec.workdir / "bundle", name)
        return ServedBundle(name, pid, self.oci, self.images, cgroup, spec.workdir)

    def _serve_engine(
        self, spec: RunSpec, image: Image, name: str, args: list[str], env: dict[str, str]
    ) -> Served:
        env_file, multiline = _env_file(spec.workdir, env)
        (spec.workdir / "tmp").chmod(0o1777)
        command = [
            *self._engine_run(spec, name, args[0], env_file, multiline),
            "--detach",
            "--network",
            "none",
            "-v",
            f"{spec.workdir / 'tmp'}:{INSIDE['tmp']}:rw",
            "-v",
            f"{spec.script}:{INSIDE['script']}:ro",
        ]
        if spec.memory is not None:
            command += ["--memory", str(spec.memory), "--memory-swap", str(spec.memory)]
        command += [image.id, *args[1:]]
        started = subprocess.run(
            command, env={**os.environ, **multiline}, capture_output=True, text=True, timeout=120
        )
        if started.returncode != 0:
            raise OSError(started.stderr.strip() or f"exit status {started.returncode}")
        state = subprocess.run(
            [self.engine.binary, "inspect", name, "--format", "{{.State.Pid}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return ServedEngine(name, int(state.stdout.strip()), self.engine, spec.workdir)

    # -- stopping and cleaning up ---------------------------------------------------------
    def stop(self, job_id: str) -> None:
        with self._lock:
            name = self._running.get(job_id)
            if name is None:
                return
            self._stopped.add(job_id)
        threading.Thread(target=self._kill, args=(name,), daemon=True).start()

    def stop_all(self, force: bool = False) -> None:
        with self._lock:
            jobs = list(self._running)
        for job_id in jobs:
            self.stop(job_id)

    def _kill(self, name: str) -> None:
        if self.oci is not None:
            self.oci.kill(name)
        else:
            subprocess.run([self.engine.binary, "kill", name], capture_output=True, timeout=30)

    def close(self) -> None:
        if self.warm is not None:
            self.warm.close()
        self.images.close()
        if self.idmap is not None:
            self.idmap.release()  # nothing of ours runs in it any more

    def reap(self, workdir: Path) -> bool:
        try:
            name = json.loads((workdir / CONTAINER_FILE).read_text())["name"]
        except (OSError, ValueError, KeyError):
            return False
        self._remove(name)
        return True

    def _remove(self, name: str) -> None:
        if self.oci is not None:
            self.oci.delete(name)
        self.engine.remove([name])
        JobCgroup(name, None).remove()
        self.images.drop_root(name)

    def clean(self) -> None:
        """Remove this platform's containers and cgroups that a dead platform left."""
        names = set(self.engine.containers(self.prefix))
        if self.oci is not None:
            names.update(self.oci.containers(self.prefix))
        for name in names:
            self._remove(name)
        remove_all(self.prefix)
        self.images.drop_roots(self.prefix)


def _log_killed(path: Path, kills: int, memory: int) -> None:
    """Tell the job's log that the kernel killed `kills` of its processes."""
    what = "a process of this job was" if kills == 1 else f"{kills} processes of this job were"
    line = f"[ondrop] {what} killed: out of memory (limit {format_bytes(memory)})\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _take_back(folders: list[Path]) -> None:
    """The folders lent to a container are the platform's again (nothing of it runs)."""
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            os.chown(folder, 0, 0, follow_symlinks=False)


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def _warm_key(spec: RunSpec, image: Image, user: tuple[int, int]) -> Hashable:
    """What a job's warm container must match: its service, image, limits, network,
    devices and user."""
    return (spec.service, image.id, spec.memory, spec.cpu, spec.network, spec.gpus, user)


def _env_file(folder: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """The environment for the engine, not on the command line where `ps` shows it: an
    env file in `folder`, and the values an env file cannot hold (line breaks), for `-e
    NAME` with the value in the engine's own environment."""
    env_file = folder / "env"
    multiline = {k: v for k, v in env.items() if "\n" in v}
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in env.items() if k not in multiline)
    return env_file, multiline


def _environment(image: Image, spec: RunSpec) -> dict[str, str]:
    """The image's environment, a PATH and a HOME, under the spec's."""
    env = dict(_pairs(image.env))
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = "/tmp"  # the image is read-only
    env.update(spec.env)
    return env


def _pairs(env: list[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in (item.partition("=") for item in env) if k]


def _user(spec: str, rootfs: Path) -> tuple[int, int]:
    """(uid, gid) for an image's USER: numbers, or names looked up in the image."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")

    def lookup(name: str, table: str) -> int:
        if name.isdigit():
            return int(name)
        with contextlib.suppress(OSError):
            for line in (rootfs / "etc" / table).read_text().splitlines():
                fields = line.split(":")
                if fields[0] == name and len(fields) > 2:
                    return int(fields[2])
        raise OndropError(f"image user {spec!r}: no {name!r} in the image's /etc/{table}")

    uid = lookup(user, "passwd")
    if group:
        return uid, lookup(group, "group")
    with contextlib.suppress(OSError):
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[2] == str(uid):
                return uid, int(fields[3])
    return uid, uid
