"""OCI bundles and the OCI runtime (crun, or runc) that starts them: the fast path.

A job's bundle is a config.json in its work folder; the root filesystem is the
image's, unpacked once and shared read-only. Starting one is a fork and a few
mounts (crun: milliseconds), where `podman run` spends hundreds of milliseconds.
Every container has a user namespace of its own (IdMap): its root is an unprivileged
host uid, never the host's root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# The capabilities `podman run` gives by default: a job gets these and no others.
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]
MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
SYS_OPTIONS = ["nosuid", "noexec", "nodev", "ro"]
READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD = 100_000  # microseconds
# The host ids of containers' user namespaces (`auto`): a block of 65,536 from here, chosen
# by the data folder. Above the process runtime's job uids (2,000,000,000 + 4,096 blocks of
# 1,024) and the subordinate ids that /etc/subuid usually gives (100000-...).
FIRST_HOST_ID = 2_100_000_000
ID_BLOCKS, ID_COUNT = 4096, 65536
CLAIMS = Path("/run/ondrop/ids")  # a file per block, locked by the platform that uses it
_claimed: dict[int, int] = {}  # host id of a block this process holds -> its locked file
_claims_lock = threading.Lock()


@dataclass(frozen=True)
class IdMap:
    """A container's user namespace: its uids and gids 0 to count - 1 are the host's ids
    from `host` on, so that its root (and every user of its image) is an unprivileged
    user of the host's, with no power over the host's files and processes."""

    host: int
    count: int = ID_COUNT

    @classmethod
    def auto(cls, tag: int) -> IdMap:
        """The block of ids of a platform whose data folder hashes to `tag`."""
        return cls(FIRST_HOST_ID + tag % ID_BLOCKS * ID_COUNT)

    @classmethod
    def claim(cls, tag: int) -> IdMap:
        """The block of the data folder's hash `tag` (auto) or, when another platform on
        this machine holds that one, the next free one: a platform holds a lock on its
        block's file in CLAIMS until release() or its end, so no two share a block."""
        with _claims_lock:
            CLAIMS.mkdir(mode=0o700, parents=True, exist_ok=True)
            for step in range(ID_BLOCKS):
                idmap = cls.auto(tag + step)
                if idmap.host in _claimed:
                    continue
                fd = os.open(CLAIMS / str(idmap.host), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                _claimed[idmap.host] = fd
                return idmap
        raise OSError(f"every block of host ids in {CLAIMS} is held by another platform")

    def release(self) -> None:
        """Let another platform claim this block."""
        with _claims_lock:
            fd = _claimed.pop(self.host, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def to_host(self, inside: int) -> int:
        """The host id of `inside`; ids beyond the map are its `nobody` (65534)."""
        return self.host + (inside if 0 <= inside < self.count else 65534)

    def owner(self, user: tuple[int, int]) -> tuple[int, int]:
        """The host (uid, gid) of a container's (uid, gid)."""
        return self.to_host(user[0]), self.to_host(user[1])

    def describe(self) -> str:
        return f"user namespace: ids 0-{self.count - 1} are host ids {self}"

    def mappings(self) -> list[dict[str, int]]:
        return [{"containerID": 0, "hostID": self.host, "size": self.count}]

    def problem(self, tables: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> str | None:
        """Why containers cannot get this user namespace here, or None when they can: the
        kernel gives none, or the ids are some user's subordinate ids (in `tables`)."""
        if not Path("/proc/self/ns/user").exists():
            return "this kernel has no user namespaces"
        try:
            if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
                return "user namespaces are turned off here (sysctl user.max_user_namespaces=0)"
        except (OSError, ValueError):
            pass
        for table in tables:
            try:
                lines = Path(table).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                name, _, rest = line.partition(":")
                start, _, count = rest.partition(":")
                if not (start.strip().isdigit() and count.strip().isdigit()):
                    continue
                first, size = int(start), int(count)
                if first < self.host + self.count and self.host < first + size:
                    return (
                        f"the containers' host ids {self} overlap {name}'s subordinate ids "
                        f"{first}-{first + size - 1} in {table}, whose own containers could "
                        "then reach ondrop's"
                    )
        return None

    def __str__(self) -> str:
        return f"{self.host}-{self.host + self.count - 1}"


@dataclass(frozen=True)
class Bind:
    source: Path
    destination: str
    readonly: bool = False


def system_mounts() -> list[dict[str, Any]]:
    """The file systems of its own a job's container gets besides its binds (a new list
    each call)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": list(SYS_OPTIONS),
        },
        {
            "destination": "/run",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=755", "size=65536k"],
        },
    ]


def bundle_config(
    *,
    rootfs: Path,
    args: list[str],
    env: dict[str, str],
    cwd: str,
    binds: list[Bind],
    hostname: str,
    cgroups_path: str,
    user: tuple[int, int] = (0, 0),
    cpu: float | None = None,
    pids: int | None = None,
    network: bool = False,
    seccomp: dict[str, Any] | None = None,
    devices: list[Path] | None = None,
    idmap: IdMap | None = None,
) -> dict[str, Any]:
    """The config.json of a job's container: its own pid, ipc, uts, mount, user (with
    `idmap`) and (unless `network`) network namespaces; a read-only root; writable only
    where `binds` say."""
    mounts = system_mounts()
    masked = list(MASKED)
    if idmap is not None and network:
        # sysfs can only be mounted by the owner of the network namespace: a container on
        # the host's network gets the host's /sys, read-only, without its cgroups.
        for mount in mounts:
            if mount["destination"] == "/sys":
                mount.update(source="/sys", type="bind", options=["rbind", *SYS_OPTIONS])
        masked.append("/sys/fs/cgroup")
    mounts += [
        {
            "destination": b.destination,
            "type": "bind",
            "source": str(b.source),
            "options": ["rbind", "nosuid", "nodev", "ro" if b.readonly else "rw"],
        }
        for b in binds
    ]
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if idmap is not None:
        namespaces.append({"type": "user"})
    if not network:
        namespaces.append({"type": "network"})  # a loopback device and nothing else
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    nodes = []
    for device in devices or []:  # the GPUs a job was given: their device files, and no others
        st = device.stat()
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        nodes.append(
            {
                "path": str(device),
                "type": kind,
                "major": major,
                "minor": minor,
                "fileMode": 0o666,
                "uid": 0,
                "gid": 0,
            }
        )
        resources["devices"].append(
            {"allow": True, "type": kind, "major": major, "minor": minor, "access": "rwm"}
        )
    if cpu is not None:
        resources["cpu"] = {"period": CPU_PERIOD, "quota": max(1000, int(cpu * CPU_PERIOD))}
    if pids is not None:
        resources["pids"] = {"limit": pids}
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path,
        "devices": nodes,
        "maskedPaths": masked,
        "readonlyPaths": READ_ONLY,
        **({"seccomp": seccomp} if seccomp else {}),
    }
    if idmap is not None:
        linux["uidMappings"] = linux["gidMappings"] = idmap.mappings()
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": user[0], "gid": user[1]},
            "args": args,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd or "/",
            "capabilities": {k: CAPABILITIES for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }


class OciRuntime:
    """crun or runc, run as root on bundles ondrop writes."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.name = Path(binary).name

    def start(self, bundle: Path, container: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
        """`run` the bundle in the foreground; the container is gone when it exits."""
        return self._foreground(["run", "--bundle", str(bundle), container], log)

    def start_detached(self, bundle: Path, container: str) -> int:
        """`run` the bundle in the background; the pid of its first process (on this host).
        What the runtime and the container print goes to `log` in the bundle (a pipe would
        be held open by the container)."""
        with (bundle / "log").open("wb") as log:
            result = subprocess.run(
                [self.binary, "run", "--detach", "--bundle", str(bundle), container],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=60,
            )
        if result.returncode != 0:
            error = (bundle / "log").read_text(errors="replace").strip()
            raise OSError(f"{self.name} run: {error or f'exit status {result.returncode}'}")
        state = subprocess.run(
            [self.binary, "state", container], capture_output=True, text=True, timeout=30
        )
        return int(json.loads(state.stdout)["pid"])

    def exec(self, container: str, process: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start the process described in `process` (an OCI process JSON) in a running
        container; it ends when that process ends."""
        return self._foreground(["exec", "--process", str(process), container], log)

    def _foreground(self, args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """The runtime doing `args` for a job, its output (and the job's) into `log`."""
        return subprocess.Popen(
            [self.binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, container: str, signal: str = "KILL") -> None:
        subprocess.run([self.binary, "kill", container, signal], capture_output=True, timeout=30)

    def delete(self, container: str) -> None:
        subprocess.run(
            [self.binary, "delete", "--force", container], capture_output=True, timeout=30
        )

    def containers(self, prefix: str) -> list[str]:
        result = subprocess.run(
            [self.binary, "list", "-q"], capture_output=True, text=True, timeout=30
        )
        return [c for c in result.stdout.split() if c.startswith(prefix)]


def find_oci_runtime(preferred: str = "") -> OciRuntime | None:
    """crun (fastest) or runc, whichever is installed; `preferred` names one."""
    for name in [preferred] if preferred else ["crun", "runc"]:
        binary = shutil.which(name)
        if binary is not None:
            return OciRuntime(binary)
    return None


def gpu_devices(gpus: tuple[str, ...]) -> list[Path]:
    """The device files of NVIDIA GPUs with these ids, and those every CUDA program needs."""
    if not gpus:
        return []
    wanted = [Path(f"/dev/nvidia{gpu}") for gpu in gpus if gpu.isdigit()]
    shared = [Path("/dev/nvidiactl"), Path("/dev/nvidia-uvm"), Path("/dev/nvidia-uvm-tools")]
    return [d for d in [*wanted, *shared] if d.exists()]


def probe(runtime: OciRuntime, scratch: Path, idmap: IdMap | None = None) -> str | None:
    """Why `runtime` cannot start containers here (in a user namespace of `idmap`), or None
    when it can: it starts a bundle whose program does not exist, which fails after the
    namespaces and cgroups are made. With `idmap`, the root of the container must be able
    to enter `scratch`."""
    import uuid

    bundle = scratch / f"probe-{uuid.uuid4().hex[:8]}"
    (bundle / "rootfs").mkdir(parents=True)
    if idmap is not None:  # the container's root enters it, and makes mount points in it
        bundle.chmod(0o711)
        os.chown(bundle / "rootfs", idmap.host, idmap.host)
        (bundle / "rootfs").chmod(0o755)
    name = f"ondrop-probe-{uuid.uuid4().hex[:8]}"
    config = bundle_config(
        rootfs=bundle / "rootfs",
        args=["/ondrop-probe"],
        env={},
        cwd="/",
        binds=[],
        hostname="probe",
        cgroups_path=f"/ondrop/{name}/job",
        idmap=idmap,
    )
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        result = subprocess.run(
            [runtime.binary, "run", "--bundle", str(bundle), name],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        runtime.delete(name)
        shutil.rmtree(bundle, ignore_errors=True)
        from ondrop.runtime.cgroups import JobCgroup

        JobCgroup(name, None).remove()
    output = result.stdout + result.stderr
    if "ondrop-probe" in output and (
        "no such file" in output.lower() or "not found" in output.lower()
    ):
        return None  # it got as far as starting the program
    return output.strip().splitlines()[-1] if output.strip() else f"exit {result.returncode}"


SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")  # containers-common's
ARCHES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64")}


def seccomp_profile(path: Path = SECCOMP_PROFILE) -> dict[str, Any] | None:
    """The seccomp filter podman gives containers, as an OCI `linux.seccomp` for a job with
    CAPABILITIES on this machine's architecture; None when the profile is not installed.

    Only the machine's own system-call ABI is allowed: podman also allows the 32-bit ones
    (x86 and x32 beside x86_64), but compiling the filter for three ABIs costs crun about
    20 ms on every start (measured by bench/cold_start.py), for binaries a job's image
    rarely has; their system calls fail instead."""
    import platform

    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    arch, scmp_arch = ARCHES.get(platform.machine(), ("", ""))
    if not arch:
        return None
    architectures = [scmp_arch]

    def applies(rule: dict[str, Any]) -> bool:
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("caps") and not set(includes["caps"]) <= set(CAPABILITIES):
            return False
        if includes.get("arches") and arch not in includes["arches"]:
            return False
        if excludes.get("caps") and set(excludes["caps"]) & set(CAPABILITIES):
            return False
        return not (excludes.get("arches") and arch in excludes["arches"])

    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not applies(rule):
            continue
        syscall: dict[str, Any] = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            syscall["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            syscall["errnoRet"] = rule["errnoRet"]
        syscalls.append(syscall)
    seccomp: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if profile.get("defaultErrnoRet") is not None:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return seccomp
