"""The one settings table: every knob, its environment variable, default and meaning.

Each field of `Settings` is read from `ONDROP_<NAME>` unless a value is passed
in (the CLI passes its flags), and falls back to the default written here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from ondrop.errors import DefinitionError
from ondrop.quantity import format_bytes, parse_bytes
from ondrop.store.url import shown


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _setting(default: Any, help: str, parse: Callable[[str], Any] = str) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})


BACKENDS = ("local", "ray")
STORE_SCHEMES = ("postgresql://", "postgres://")
LOG_LEVELS = ("debug", "info", "warning", "error")


PULL_POLICIES = ("always", "missing", "never")


def _pull_policy(text: str) -> str:
    """A pull policy; true and false, as ONDROP_PULL took before, are missing and never."""
    lowered = text.strip().lower()
    if lowered in PULL_POLICIES:
        return lowered
    try:
        return "missing" if _bool(lowered) else "never"
    except ValueError:
        raise ValueError(f"expected one of {', '.join(PULL_POLICIES)}, got {text!r}") from None


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _issuer_url(text: str) -> bool:
    """An OIDC issuer's URL: https, or http on a loopback address (a test's issuer)."""
    url = urlsplit(text)
    if not url.hostname or url.query or url.fragment:
        return False
    return url.scheme == "https" or (
        url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1")
    )


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("ondrop"))


@dataclass(frozen=True)
class Settings:
    data: Path = _setting(
        None, "data folder: store, local storage, work folders (default: user data dir)", Path
    )
    host: str = _setting("127.0.0.1", "address the API listens on")
    port: int = _setting(8030, "port the API listens on; 0 picks a free one", int)
    url: str = _setting("", "platform URL the client talks to (default: from the data folder)")
    admin_user: str = _setting(
        "",
        "admin user name for /system/* (HTTP basic; default: the one kept in the data "
        "folder, else admin)",
    )
    admin_password: str = _setting(
        "", "admin password (default: generated on first start, kept in the data folder)"
    )
    oidc_issuers: str = _setting(
        "",
        "OIDC issuers whose users may sign in with a bearer token, comma-separated https "
        "URLs (EGI Check-in: https://aai.egi.eu/auth/realms/egi); empty: the admin only",
    )
    oidc_audience: str = _setting(
        "",
        "the audience (aud) a user's token must be for; empty: tokens for any client of "
        "the issuers are taken, as OSCAR does (the start log warns)",
    )
    oidc_groups: str = _setting(
        "",
        "VOs (EGI entitlements, Keycloak groups) whose members may sign in, comma-separated; "
        "empty: every user of the issuers",
    )
    quota: str = _setting(
        "",
        "each signed-in user's quota (their jobs at once) unless the admin set theirs: "
        "cpu=4,memory=16Gi,gpu=1,jobs=20, any of them; empty: none",
    )
    store: str = _setting(
        "",
        "the store of services and jobs: empty for the SQLite file in the data folder, or "
        "postgresql://USER@HOST:PORT/DB for a PostgreSQL database",
    )
    shared_folder: str = _setting(
        "",
        "a folder every control plane on the store reaches at the same path (NFS, a shared "
        "disk), for several of them on one PostgreSQL store: local.default, invocation "
        "bodies and /run results live there instead of in the data folder",
    )
    concurrency: int = _setting(0, "jobs run at once on this machine (0: one per CPU core)", int)
    faas_concurrency: int = _setting(
        0, "jobs the faas pool runs at once (0: as many as ONDROP_CONCURRENCY)", int
    )
    faas_max_timeout: float = _setting(
        900.0, "seconds a faas job may run at most (AWS Lambda's limit)", float
    )
    faas_max_memory: int = _setting(
        10 * 1024**3, "memory a faas job may use at most (10Gi, AWS Lambda's limit)", parse_bytes
    )
    batch_cpus: float = _setting(0.0, "CPU cores the batch pool hands out (0: all)", float)
    batch_memory: int = _setting(
        0, "memory the batch pool hands out (0: all the machine's)", parse_bytes
    )
    gpus: str = _setting(
        "", "GPUs: a count or device ids (0,2) instead of what nvidia-smi finds; 0 for none"
    )
    max_upload: int = _setting(
        1024**3, "largest accepted upload or invocation body (bytes, or 512Mi, 2G)", parse_bytes
    )
    grace: float = _setting(30.0, "seconds running jobs get to finish on shutdown", float)
    run_images_on_host: bool = _setting(
        False,
        "run services that name an image with the process runtime when no container engine "
        "is available (off: such jobs wait and say why; refused at apply with ONDROP_PULL=never)",
        _bool,
    )
    container_engine: str = _setting(
        "auto",
        "engine for services with an image: auto (podman, else docker), podman, docker or none",
    )
    oci_runtime: str = _setting(
        "auto",
        "OCI runtime that starts containers fast (as root): auto (crun, else runc), "
        "crun, runc, or none (the engine runs them)",
    )
    job_uids: str = _setting(
        "auto",
        "uids the process runtime's jobs run as when the platform runs as root, one of its "
        "own per running job: FIRST-LAST, or auto (a block of 1,024 from 2,000,000,000 up, "
        "chosen by the data folder)",
    )
    pull: str = _setting(
        "missing",
        "when a service's image is pulled from its registry: missing (when it is not in the "
        "engine's store), always (again every 5 minutes of use; the local one "
        "when the registry cannot be reached), never (only images built or imported here; "
        "any other is refused at apply)",
        _pull_policy,
    )
    poll_interval: float = _setting(
        10.0,
        "seconds between listings of input folders in stores that cannot push events "
        "(S3, WebDAV); 0 lists them only at start",
        float,
    )
    object_store: str = _setting(
        "none", "run a bundled object store as minio.default: none or seaweedfs"
    )
    object_store_host: str = _setting(
        "127.0.0.1",
        "address the bundled object store listens on: one the nodes of a cluster reach",
    )
    backend: str = _setting(
        "local", "where jobs run: local (this machine) or ray (a Ray cluster), for both pools"
    )
    faas_backend: str = _setting("", "where the faas pool's jobs run (default: backend)")
    batch_backend: str = _setting("", "where the batch pool's jobs run (default: backend)")
    ray_address: str = _setting(
        "", "the Ray cluster's address HOST:PORT; empty starts a Ray head on this machine"
    )
    log_level: str = _setting("info", "log level: debug, info, warning, error")

    def __post_init__(self) -> None:
        if self.data is None:
            object.__setattr__(self, "data", default_data_dir())
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} is not between 0 and 65535")
        if self.concurrency < 0:
            problems.append(f"concurrency {self.concurrency} is negative")
        if self.grace < 0:
            problems.append(f"grace {self.grace} is negative")
        if self.max_upload <= 0:
            problems.append(f"max_upload {self.max_upload} must be positive")
        if self.store and not self.store.startswith(STORE_SCHEMES):
            problems.append(
                f"store {shown(self.store)!r} is neither empty (the SQLite file) nor a "
                "postgresql:// URL"
            )
        if self.shared_folder and not self.store:
            problems.append(
                "shared_folder is for several control planes on one PostgreSQL store: "
                "give the store too"
            )
        if self.shared_folder and not Path(self.shared_folder).is_absolute():
            problems.append(f"shared_folder {self.shared_folder!r} is not an absolute path")
        problems += [
            f"oidc_issuers: {issuer!r} is not an https URL (http only on loopback)"
            for issuer in self.issuers
            if not _issuer_url(issuer)
        ]
        from ondrop.quotas import Limits  # (it needs the models, which need settings)

        try:
            Limits.parse(self.quota)
        except DefinitionError as exc:
            problems.append(str(exc))
        if self.pull not in PULL_POLICIES:
            problems.append(f"pull {self.pull!r} is not one of {', '.join(PULL_POLICIES)}")
        if self.object_store not in ("none", "seaweedfs"):
            problems.append(f"object_store {self.object_store!r} is not none or seaweedfs")
        for name in ("backend", "faas_backend", "batch_backend"):
            value = getattr(self, name)
            if value not in BACKENDS and not (value == "" and name != "backend"):
                problems.append(f"{name} {value!r} is not one of {', '.join(BACKENDS)}")
        if self.log_level.lower() not in LOG_LEVELS:
            problems.append(f"log_level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if problems:
            raise DefinitionError("invalid settings: " + "; ".join(problems))

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """From `overrides` (None values ignored), then ONDROP_* variables, then defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            given = (overrides or {}).get(f.name)
            if given is not None:
                values[f.name] = given
                continue
            env = env_name(f.name)
            if env in environ:
                try:
                    values[f.name] = f.metadata["parse"](environ[env])
                except ValueError as exc:
                    raise DefinitionError(f"setting {env}: {exc}") from None
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def issuers(self) -> list[str]:
        return _listed(self.oidc_issuers)

    @property
    def groups(self) -> list[str]:
        return _listed(self.oidc_groups)

    @property
    def workers(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    def backend_of(self, pool: str) -> str:
        """The backend the pool `pool` (faas or batch) runs its jobs on."""
        return {"faas": self.faas_backend, "batch": self.batch_backend}.get(pool) or self.backend


def env_name(name: str) -> str:
    return f"ONDROP_{name.upper()}"


def help_for(name: str) -> str:
    """The table's help line for a setting, with its variable: used for CLI flags and docs."""
    f = {f.name: f for f in dataclasses.fields(Settings)}[name]
    text = f.metadata["help"]
    if "default" not in text and f.default not in (None, ""):
        text += f" (default: {_default_shown(f)})"
    return f"{text} (env {env_name(name)})"


def _default_shown(f: dataclasses.Field[Any]) -> str:
    default: Any = f.default
    if isinstance(default, bool):
        return "on" if default else "off"
    if f.metadata["parse"] is parse_bytes and default:
        return format_bytes(default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def table() -> list[tuple[str, str, str, str]]:
    """(variable, flag, default, meaning) for every setting: docs/settings.md shows it."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = "user data dir" if f.name == "data" else repr(f.default)
        flag = "--" + f.name.replace("_", "-")
        rows.append((env_name(f.name), flag, default, f.metadata["help"]))
    return rows


def markdown() -> str:
    """docs/settings.md, from the table (`make docs` writes it)."""
    lines = [
        "# Settings",
        "",
        "One table: every setting is read from its environment variable unless its flag",
        "is given, and falls back to the default. `ondrop up` takes every flag but `--url`;",
        "the other commands take `--url`, `--admin-user`, `--admin-password` and `--data`",
        "before the command (`ondrop --url http://host:8030 services`) and otherwise find",
        "a local platform through its data folder. This page is generated from the code",
        "(`make docs`) and the tests check that it is current.",
        "",
        "| variable | flag | default | meaning |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{env}` | `{flag}` | `{default}` | {meaning} |"
        for env, flag, default, meaning in table()
    ]
    return "\n".join(lines) + "\n"
