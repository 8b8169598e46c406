"""The container engine (podman, or docker) through its CLI: images in, rootfs out.

ondrop asks the engine for images (inspect, pull, build, import, export) and, where
it cannot run an OCI runtime itself, to run containers. Detected once at start from
ONDROP_CONTAINER_ENGINE: auto (podman, else docker), podman, docker or none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ondrop.errors import DefinitionError, ExecutionError, NotFoundError
from ondrop.runtime.oci import IdMap

log = logging.getLogger(__name__)

ENGINES = ("podman", "docker")
PULL_TIMEOUT = 600.0


@dataclass(frozen=True)
class Image:
    """What a container needs to know of its image."""

    id: str
    ref: str
    env: list[str] = field(default_factory=list)  # "KEY=value"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""


class Engine:
    def __init__(self, name: str, binary: str) -> None:
        self.name = name
        self.binary = binary

    def _run(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ExecutionError(f"{self.name} {args[0]} did not finish in {timeout:g} s") from None
        if check and result.returncode != 0:
            raise ExecutionError(
                f"{self.name} {' '.join(args[:2])} failed: {_last_line(result.stderr)}"
            )
        return result

    def version(self) -> str:
        result = self._run("version", "--format", "{{.Client.Version}}", check=False)
        return result.stdout.strip() or "unknown"

    def image(self, ref: str) -> Image | None:
        """The local image `ref`, or None when the engine's store has none."""
        result = self._run("image", "inspect", ref, check=False)
        if result.returncode != 0:
            return None
        try:
            (data,) = json.loads(result.stdout)
        except ValueError:
            return None
        config = data.get("Config") or {}
        return Image(
            id=str(data["Id"]).removeprefix("sha256:"),
            ref=ref,
            env=list(config.get("Env") or []),
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            workdir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def ensure(self, ref: str, policy: str) -> Image:
        """The image `ref` as the pull policy has it: pulled when it is not local
        (`missing`), pulled again (`always`: the local one is used when the registry cannot
        be reached), or never pulled (`never`); NotFoundError says what to do."""
        found = self.image(ref)
        if found is not None and policy != "always":
            return found
        if policy == "never":
            raise NotFoundError(
                f"image {ref} is not in {self.name}'s store and the pull policy is never "
                "(ONDROP_PULL): build or import it first (`ondrop image build`, "
                "`ondrop image import`)"
            )
        result = self._run("pull", "-q", ref, timeout=PULL_TIMEOUT, check=False)
        pulled = self.image(ref) if result.returncode == 0 else None
        if pulled is not None:
            return pulled
        if found is not None:
            log.warning(
                "image %s: the registry could not be reached (%s); the local one is used",
                ref,
                _last_line(result.stderr),
            )
            return found
        raise NotFoundError(
            f"image {ref} not found locally and the registry could not be reached: build "
            f"or import it first ({self.name} said: {_last_line(result.stderr)})"
        )

    def build(self, context: Path, tag: str, containerfile: Path | None = None) -> Image:
        args = ["build", "-t", tag]
        # podman finds a Containerfile by itself; Docker looks for a Dockerfile only.
        default = context / "Containerfile"
        if containerfile is None and default.exists() and not (context / "Dockerfile").exists():
            containerfile = default
        if containerfile is not None:
            args += ["-f", str(containerfile)]
        self._run(*args, str(context), timeout=3600)
        built = self.image(tag)
        if built is None:
            raise ExecutionError(f"{self.name} built {tag} but cannot find it")
        return built

    def import_rootfs(self, tarball: Path, tag: str) -> Image:
        self._run("import", str(tarball), tag, timeout=600)
        imported = self.image(tag)
        if imported is None:
            raise ExecutionError(f"{self.name} imported {tag} but cannot find it")
        return imported

    def export_rootfs(self, image: Image, tarball: Path, prefix: str = "ondrop-") -> None:
        """Write the image's root filesystem, flattened, to `tarball` (through a container
        named with `prefix`, so a clean-up after a crash finds it)."""
        name = f"{prefix}export-{uuid.uuid4().hex[:12]}"
        self._run("create", "--name", name, image.id, "true")
        try:
            self._run("export", "-o", str(tarball), name, timeout=1800)
        finally:
            self._run("rm", "-f", name, check=False)

    def user_namespace(self, idmap: IdMap | None) -> tuple[list[str], str]:
        """The options of `run` that give a container a user namespace whose root is not the
        host's, and what its ids are on the host; ExecutionError says why it cannot."""
        if self.name == "podman":
            if os.geteuid() != 0:
                return (
                    [],
                    "user namespace of rootless podman: the container's root is ondrop's user",
                )
            if idmap is None:
                raise ExecutionError(
                    "podman runs as root and no host ids are given for a user namespace"
                )
            ids = f"0:{idmap.host}:{idmap.count}"
            return ["--uidmap", ids, "--gidmap", ids], idmap.describe()
        found = self._run("info", "--format", "{{json .SecurityOptions}}", check=False, timeout=30)
        if "name=userns" in found.stdout:
            return [], "user namespace of docker's daemon (userns-remap)"
        if "name=rootless" in found.stdout:
            return (
                [],
                "user namespace of rootless docker: the container's root is the daemon's user",
            )
        raise ExecutionError(
            "docker's daemon runs containers without a user namespace (no userns-remap), so a "
            'job\'s root would be the host\'s root: set "userns-remap": "default" in '
            "/etc/docker/daemon.json and restart docker, or use podman"
        )

    def remove(self, names: list[str]) -> None:
        if names:
            self._run("rm", "-f", *names, check=False, timeout=60)

    def containers(self, prefix: str) -> list[str]:
        """Names of the engine's containers (running or not) that start with `prefix`."""
        result = self._run("ps", "-a", "--format", "{{.Names}}", check=False)
        return [n for n in result.stdout.split() if n.startswith(prefix)]


def detect(choice: str) -> Engine | None:
    """The engine ONDROP_CONTAINER_ENGINE asks for: auto, podman, docker or none."""
    choice = choice.strip().lower() or "auto"
    if choice == "none":
        return None
    if choice not in ("auto", *ENGINES):
        raise DefinitionError(
            f"ONDROP_CONTAINER_ENGINE={choice!r}: expected auto, podman, docker or none"
        )
    for name in ENGINES if choice == "auto" else (choice,):
        binary = shutil.which(name)
        if binary is None:
            continue
        engine = Engine(name, binary)
        probe = engine._run(
            "info",
            "--format",
            "{{.Host.Arch}}" if name == "podman" else "{{.OSType}}",
            check=False,
            timeout=30,
        )
        if probe.returncode == 0:
            return engine
        if choice != "auto":
            raise DefinitionError(f"{name} is installed but not usable: {_last_line(probe.stderr)}")
    if choice != "auto":
        raise DefinitionError(f"ONDROP_CONTAINER_ENGINE={choice}, but {choice} is not installed")
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
