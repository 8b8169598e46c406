"""OCI bundles and the OCI runtime (crun, or runc) that starts them: the fast path.

A job's bundle is a config.json in its work folder; the root filesystem is the
image's, unpacked once and shared read-only. Starting one is a fork and a few
mounts (crun: milliseconds), where `podman run` spends hundreds of milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
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
READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD = 100_000  # microseconds


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
            "options": ["nosuid", "noexec", "nodev", "ro"],
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
) -> dict[str, Any]:
    """The config.json of a job's container: its own pid, ipc, uts, mount and (unless
    `network`) network namespaces; a read-only root; writable only where `binds` say."""
    mounts = system_mounts()
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
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "devices": nodes,
            "maskedPaths": MASKED,
            "readonlyPaths": READ_ONLY,
            **({"seccomp": seccomp} if seccomp else {}),
        },
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


def probe(runtime: OciRuntime, scratch: Path) -> str | None:
    """Why `runtime` cannot start containers here, or None when it can: it starts a bundle
    whose program does not exist, which fails after the namespaces and cgroups are made."""
    import uuid

    bundle = scratch / f"probe-{uuid.uuid4().hex[:8]}"
    (bundle / "rootfs").mkdir(parents=True)
    name = f"ondrop-probe-{uuid.uuid4().hex[:8]}"
    config = bundle_config(
        rootfs=bundle / "rootfs",
        args=["/ondrop-probe"],
        env={},
        cwd="/",
        binds=[],
        hostname="probe",
        cgroups_path=f"/ondrop/{name}/job",
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
