"""The service definition every FDL shape is mapped onto, and the storage provider configs.

This is also the service JSON of the REST API: OSCAR's field names where OSCAR
has the field, ondrop's additions beside them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ondrop.fdl.problems import Problem, in_words
from ondrop.quantity import parse_bytes, parse_cpu

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
# The owner of the services the admin creates (OSCAR's name for it).
ADMIN_OWNER = "cluster_admin"
# Seconds an idle container of a service kept ready (`synchronous.min_scale`) beyond those
# is kept, where the service does not say (`warm`): as Knative keeps an idle pod.
SYNC_WARM = 60
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Provider types a definition may name; `local` is ondrop's own.
PROVIDER_TYPES = ("local", "minio", "s3", "webdav", "onedata", "rucio")
# Fields of provider configs that are secrets: never shown to non-admins or in logs.
PROVIDER_SECRETS = ("access_key", "secret_key", "password", "token", "refresh_token")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Linux refuses one environment string, "NAME=value" and its NUL, longer than this.
MAX_ARG_STRLEN = 128 * 1024
# A service's own environment may take this share of ARG_MAX; the rest is left for what
# the platform adds (the contract variables, EVENT up to 96 KiB, PATH, the arguments).
ENV_SHARE = 0.5
POINTER = 8  # the kernel counts each string's pointer in envp against ARG_MAX too


def arg_max() -> int:
    """This system's limit on arguments plus environment, in bytes (128 KiB if unknown)."""
    try:
        found = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        found = -1
    return found if found > 0 else 128 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StorageIO(_Strict):
    storage_provider: str = Field(
        "minio.default",
        description="`<type>.<id>` of a storage provider; default minio.default, the "
        "platform's default store",
    )
    path: str = Field(description="folder in the provider, `bucket/folder` for object stores")
    suffix: list[str] = Field(
        default_factory=list, description="only file names ending with one of these (default all)"
    )
    prefix: list[str] = Field(
        default_factory=list,
        description="only file names starting with one of these (default all)",
    )

    @field_validator("storage_provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        kind, _, ident = value.partition(".")
        if kind not in PROVIDER_TYPES:
            raise ValueError(
                f"unknown storage provider type {kind!r} in {value!r}; expected one of "
                + ", ".join(PROVIDER_TYPES)
            )
        return f"{kind}.{ident or 'default'}"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        from ondrop.storage.base import check_prefix

        stripped = value.strip().strip("/")
        if not stripped:
            raise ValueError("path is empty; give a folder such as images/in")
        return check_prefix(stripped)

    @field_validator("suffix", "prefix", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def accepts(self, name: str) -> bool:
        """True when a file called `name` passes this entry's prefix and suffix filters."""
        return self.refusal(name) is None

    def refusal(self, name: str) -> str | None:
        """Which filter keeps a file called `name` out, in words; None when none does."""
        if self.prefix and not name.startswith(tuple(self.prefix)):
            return f"takes only names starting with {', '.join(self.prefix)}"
        if self.suffix and not name.endswith(tuple(self.suffix)):
            return f"takes only names ending in {', '.join(self.suffix)}"
        return None


class Environment(_Strict):
    variables: dict[str, str] = Field(
        default_factory=dict, alias="Variables", description="environment of the script"
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        alias="Secrets",
        description="like variables, but never shown in replies, listings or logs",
    )

    @model_validator(mode="before")
    @classmethod
    def _either_case(cls, data: Any) -> Any:
        # OSCAR wrote `Variables` until 3.x and `variables` since; accept both.
        if isinstance(data, dict):
            data = {k.lower() if k in {"Variables", "Secrets"} else k: v for k, v in data.items()}
        return data

    @field_validator("variables", "secrets", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()
            }
        return value

    def problems(self) -> list[Problem]:
        """What would make every job's exec fail: bad names, NUL bytes, too many bytes.

        Checked when a service is applied (the loader and the API), not by the model
        itself, so that a definition stored before these checks still loads and can be
        fixed or deleted. A secret's value is never repeated in a message."""
        found: list[Problem] = []
        sizes: dict[str, int] = {}  # as the supervisor merges them: secrets over variables
        for kind, entries in (("variables", self.variables), ("secrets", self.secrets)):
            where = f"environment.{kind}"
            for name, value in entries.items():
                if not ENV_NAME.fullmatch(name):
                    found.append(
                        Problem(
                            where,
                            f"variable {name!r}: not a valid name; expected letters, digits "
                            "and '_', not starting with a digit (such as MY_VAR)",
                        )
                    )
                    continue
                if "\0" in value:
                    found.append(
                        Problem(
                            where,
                            f"variable {name!r}: its value holds a NUL byte, which no "
                            "environment can carry",
                        )
                    )
                    continue
                try:
                    size = len(name) + 1 + len(value.encode("utf-8")) + 1
                except UnicodeEncodeError:
                    found.append(Problem(where, f"variable {name!r}: its value is not text"))
                    continue
                if size > MAX_ARG_STRLEN:
                    found.append(
                        Problem(
                            where,
                            f"variable {name!r}: {name}=value takes {size} bytes; one variable "
                            f"may take at most {MAX_ARG_STRLEN} (128 KiB)",
                        )
                    )
                sizes[name] = size + POINTER
        total, system = sum(sizes.values()), arg_max()
        limit = int(system * ENV_SHARE)
        if total > limit:
            largest = sorted(sizes, key=lambda n: -sizes[n])[:3]
            found.append(
                Problem(
                    "environment",
                    f"{len(sizes)} variables and secrets take {total} bytes; at most {limit} "
                    f"fit (half of this system's ARG_MAX, {system} bytes; the rest is left "
                    "for what the platform adds); the largest: "
                    + ", ".join(f"{n!r} ({sizes[n]} bytes)" for n in largest),
                )
            )
        return found


class LocalProviderConfig(_Strict):
    path: str = Field(description="absolute folder on the platform's machine")
    shared: bool = Field(
        False,
        description="the same folder is mounted at this path on every node of a cluster, "
        "so that jobs on a Ray cluster may use it",
    )


def stored(info: ValidationInfo) -> bool:
    """Whether a definition applied before is being read back from the store: it is
    taken as it was applied (an older ondrop checked less), never refused at start."""
    return bool((info.context or {}).get("stored"))


def check_url(value: str, example: str) -> str:
    """`value` if it is an http(s) URL with a host, else a ValueError that says why."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not text:
        raise ValueError(f"is blank or missing; give the server's URL, for example {example}")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"{value!r} has no http:// or https:// in front; give the whole URL, "
            f"for example {example}"
        )
    if not rest.split("/", 1)[0] or any(c.isspace() for c in text):
        raise ValueError(f"{value!r} is not a URL with a host, for example {example}")
    return text


class MinioProviderConfig(_Strict):
    endpoint: str = Field(
        "", description="URL of the S3 API, http(s)://host:port", validate_default=True
    )
    verify: bool = True
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        if stored(info):
            return value
        return check_url(value, "https://minio.example.org:9000")


class S3ProviderConfig(_Strict):
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    endpoint: str = Field(
        "", description="URL of an S3-compatible API (ondrop's); not given: Amazon S3"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        if stored(info) or not value:
            return value
        return check_url(value, "https://s3.example.org")


def check_host(value: str, example: str) -> str:
    """A host[:port][/path], with or without an http(s) scheme; ValueError when blank."""
    text = value.strip()
    if not text:
        raise ValueError(f"is blank; give the server's host, for example {example}")
    if "://" in text:
        return check_url(text, example)
    if any(c.isspace() for c in text) or text.startswith("/"):
        raise ValueError(f"{value!r} is not a host, for example {example}")
    return text


class WebdavProviderConfig(_Strict):
    hostname: str = Field(description="host[:port][/base path]; https unless a scheme is given")
    login: str = ""
    password: str = ""
    verify: bool = True

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str, info: ValidationInfo) -> str:
        if stored(info):
            return value
        return check_host(value, "dav.example.org/remote.php/webdav")


class OnedataProviderConfig(_Strict):
    oneprovider_host: str = Field(
        description="the Oneprovider's host[:port]; https unless a scheme is given"
    )
    token: str = Field("", description="a Onedata access token with access to the space")
    space: str = Field("", description="the space's name (or its id)")
    verify: bool = True
    settle: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="seconds a file written where it lies (not renamed into place) must be "
        "unchanged before it starts a job (ondrop's)",
    )

    @field_validator("oneprovider_host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        if stored(info):
            return value
        return check_host(value, "oneprovider.example.org")


PROVIDER_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalProviderConfig,
    "minio": MinioProviderConfig,
    "s3": S3ProviderConfig,
    "webdav": WebdavProviderConfig,
    "onedata": OnedataProviderConfig,
}


def validate_providers(
    value: Any, context: dict[str, Any] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """`{type: {id: config}}` checked field by field against the type's model."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of provider type to {id: settings}")
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, entries in value.items():
        if kind not in PROVIDER_TYPES:
            raise ValueError(
                f"unknown storage provider type {kind!r}; expected one of "
                + ", ".join(PROVIDER_TYPES)
            )
        if not isinstance(entries, dict):
            raise ValueError(f"{kind}: expected a mapping of id to settings")
        model = PROVIDER_MODELS.get(kind)
        checked[kind] = {}
        for ident, config in entries.items():
            if config is not None and not isinstance(config, dict):
                raise ValueError(f"{kind}.{ident}: expected a mapping of settings")
            if model is None:
                checked[kind][str(ident)] = dict(config or {})
                continue
            given = {k: v for k, v in (config or {}).items() if v is not None}
            try:
                checked[kind][str(ident)] = model.model_validate(
                    given, context=context
                ).model_dump()
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                message = in_words(
                    first["type"], first.get("ctx") or {}, first["msg"], first["input"]
                )
                raise ValueError(f"{kind}.{ident}.{field}: {message}") from None
    return checked


class Expose(_Strict):
    """An exposed service (OSCAR's `expose`): containers of the service's image that serve
    HTTP themselves, kept running and reached at /system/services/<name>/exposed/. A zero,
    as Go's JSON writes an unset number, is the default, as in OSCAR."""

    api_port: int = Field(ge=1, le=65535, description="the port the container's server listens on")
    min_scale: int = Field(1, ge=0, le=100, description="replicas at least; default 1")
    max_scale: int = Field(10, ge=0, le=100, description="replicas at most; default 10")
    cpu_threshold: int = Field(
        80,
        ge=0,
        le=1000,
        description="percent of a replica's CPU (its `cpu`, else one core) above which "
        "replicas are added, below which they are removed; default 80",
    )
    rewrite_target: bool = Field(
        False,
        description="pass the whole path (/system/services/<name>/exposed/...) to the "
        "server; default no: the server sees the path below /exposed",
    )
    default_command: bool = Field(
        False, description="run the image's own command instead of the script; default no"
    )
    set_auth: bool = Field(
        False,
        description="ask callers for the service's token (basic: the service's name and its "
        "token; or a bearer token); default no: anyone who reaches the platform may call",
    )
    health_path: str = Field(
        "/", description="the path asked for to tell a replica is up; default /"
    )
    auth_type: Literal["basic", "forward"] = Field(
        "basic", description="OSCAR's; both ask for the service's token here"
    )
    probe_mode: Literal["legacy", "direct"] = Field(
        "legacy",
        description="legacy: with rewrite_target the health path is under the base path; "
        "direct: as given",
    )

    @model_validator(mode="before")
    @classmethod
    def _oscar(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        port = data.get("api_port")
        if isinstance(port, list):  # OSCAR 3.x: a list; ondrop proxies its first
            if len(port) > 1:
                raise ValueError(
                    f"api_port: ondrop proxies one port of an exposed service, got {port}"
                )
            data["api_port"] = port[0] if port else 0
        if data.pop("nodePort", None) not in (None, [], 0):
            raise ValueError(
                "nodePort: ondrop reaches exposed services through its own API only "
                "(/system/services/<name>/exposed/); leave it out"
            )
        for field in ("min_scale", "max_scale", "cpu_threshold"):
            if data.get(field) == 0:  # Go's unset number: the default, as OSCAR's
                data.pop(field)
        if data.get("health_path") == "":
            data.pop("health_path")
        if data.get("auth_type") == "":
            data.pop("auth_type")
        if data.get("probe_mode") == "":
            data.pop("probe_mode")
        return data

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        path = "/" + value.strip().lstrip("/")
        if not path.isprintable() or " " in path or "#" in path or len(path) > 1024:
            raise ValueError(f"expected a path such as /health, got {value!r}")
        return path

    @model_validator(mode="after")
    def _scales(self) -> Expose:
        if self.max_scale < self.min_scale:
            raise ValueError(f"max_scale ({self.max_scale}) is below min_scale ({self.min_scale})")
        return self


class Synchronous(_Strict):
    """OSCAR's `synchronous` (Knative's scale of a service's pods for /run, one request
    each): here, containers of the service kept warm and ready for its jobs, and a cap on
    its jobs at once. Zero, as OSCAR's default, asks for neither."""

    min_scale: int = Field(
        default=0,
        ge=0,
        le=100,
        description="warm containers kept ready for the service's jobs from apply on "
        "(containers on the fast path); default 0",
    )
    max_scale: int = Field(
        default=0,
        ge=0,
        le=10000,
        description="the service's jobs at once at most; default 0, no cap",
    )

    @model_validator(mode="after")
    def _scales(self) -> Synchronous:
        if self.max_scale and self.max_scale < self.min_scale:
            raise ValueError(f"max_scale ({self.max_scale}) is below min_scale ({self.min_scale})")
        return self


def no_port(value: Any) -> bool:
    """An `expose` that asks for nothing: no port (OSCAR's zero value, which clients that
    read a service and send it back write)."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    port = value.get("api_port")
    return port in (None, 0, [], [0])


class Service(_Strict):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="lowercase letters, digits, '-' and '_', at most 63 characters",
    )
    image: str = Field("", description="container image; empty runs the script on the host")
    script: str = Field(
        "",
        description="the script's text (FDL files may give a path); without one the image's "
        "own command runs",
    )
    runtime: Literal["process", "container"] | None = Field(
        None,
        description="`process` (on the host) or `container`; default: container when the "
        "service names an image, else process",
    )
    mode: Literal["faas", "batch", "hybrid"] = Field("faas", description="pool; default faas")
    cpu: str | None = Field(None, description="CPU cores, '0.5' or '500m'; default no limit")
    memory: str | None = Field(None, description="memory limit, '256Mi' or '1Gi'; default none")
    timeout: int | None = Field(
        None, gt=0, description="seconds before the job is killed; default the platform's (900)"
    )
    retries: int = Field(0, ge=0, le=100, description="extra attempts after a failure; default 0")
    max_concurrency: int | None = Field(
        None, gt=0, description="jobs of this service at once; default the platform's limit"
    )
    gpu: int = Field(0, ge=0, description="GPUs each job needs (on the batch pool); default 0")
    gpu_optional: bool = Field(
        False, description="run on the CPU where there is no GPU, instead of refusing; default no"
    )
    batch_above: str | None = Field(
        None,
        description="hybrid services: inputs larger than this size ('100Mi') go straight to "
        "batch; default none",
    )
    network: bool = Field(
        False, description="may a containerised job reach the network; default no"
    )
    warm: int = Field(
        0,
        ge=0,
        le=86400,
        description="containers: keep one warm between jobs, removed after this many seconds "
        "idle; default 0, a fresh container per job",
    )
    expose: Expose | None = Field(
        None,
        description="serve HTTP from long-running containers of the image, reached at "
        "/system/services/<name>/exposed/; default none",
    )
    synchronous: Synchronous = Field(
        default_factory=Synchronous,
        description="OSCAR's: `min_scale` warm containers kept ready for the service's jobs "
        "(/run first), `max_scale` its jobs at once at most; default neither",
    )
    log_level: str = Field("INFO", description="NOTSET, DEBUG, INFO, WARNING, ERROR, CRITICAL")
    environment: Environment = Field(default_factory=Environment)
    input: list[StorageIO] = Field(
        default_factory=list, description="folders whose new files start jobs"
    )
    output: list[StorageIO] = Field(
        default_factory=list, description="where the files the script writes are stored"
    )
    collect: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="fan-in: run once per original input, when every job descending from it "
        "has ended, with the outputs of the service named here staged in; default none",
    )
    storage_providers: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="{type: {id: settings}} of providers named above"
    )
    token: str = Field("", description="read-only: the bearer token for /job and /run")
    owner: str = Field(
        ADMIN_OWNER,
        max_length=255,
        description="set by the platform: the signed-in user (OIDC `sub`) who created it, "
        f"{ADMIN_OWNER} for the admin's",
    )
    visibility: Literal["private", "restricted", "public"] = Field(
        "private",
        description="who of the signed-in users may list, read and run it besides its "
        "owner: private (none), restricted (`allowed_users`), public (all); default private",
    )
    allowed_users: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="restricted services: the users (OIDC `sub`) who may list, read and run it",
    )
    vo: str = Field(
        "",
        max_length=255,
        description="the VO (EGI virtual organisation) it belongs to: only its members may "
        "use it; default: the first of ONDROP_OIDC_GROUPS its creator is in",
    )

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        parse_cpu(value)
        return str(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if parse_bytes(value) <= 0:
            raise ValueError(f"expected a positive size, got {value!r}")
        return str(value)

    @field_validator("batch_above", mode="before")
    @classmethod
    def _batch_above(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        parse_bytes(value)
        return str(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        text = str(value or "INFO").strip().upper()
        if text not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return text

    @field_validator("visibility", "owner", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        """Go's JSON (oscar-cli) sends an unset text as "": the default, then."""
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("allowed_users")
    @classmethod
    def _allowed_users(cls, value: list[str]) -> list[str]:
        users = list(dict.fromkeys(u.strip() for u in value if u.strip()))
        if any(len(u) > 255 or not u.isprintable() for u in users):
            raise ValueError("expected users' ids (OIDC `sub`), at most 255 printable characters")
        return users

    @field_validator("expose", mode="before")
    @classmethod
    def _expose(cls, value: Any) -> Any:
        return None if no_port(value) else value

    @field_validator("script")
    @classmethod
    def _script(cls, value: str) -> str:
        return value.replace("\r\n", "\n")

    @field_validator("storage_providers", mode="before")
    @classmethod
    def _providers(cls, value: Any, info: ValidationInfo) -> Any:
        return validate_providers(value, info.context)

    @model_validator(mode="after")
    def _something_to_run(self) -> Service:
        if not self.script.strip() and not self.image:
            raise ValueError("give a script, an image, or both")
        if self.collect is not None and self.input:
            raise ValueError(
                "a service that collects is started by the end of an input's jobs, not by "
                "files: remove its input, or its collect"
            )
        if self.collect == self.name:
            raise ValueError("a service cannot collect its own outputs")
        if self.expose is not None and self.network:
            raise ValueError(
                "an exposed service runs in a network of its own, reached only through the "
                "platform; it cannot also reach the network (network: true)"
            )
        return self

    @property
    def memory_bytes(self) -> int | None:
        return parse_bytes(self.memory) if self.memory else None

    @property
    def cap(self) -> int | None:
        """The service's jobs at once at most (`max_concurrency`, `synchronous.max_scale`:
        the lower); None, the platform's limit alone."""
        caps = [c for c in (self.max_concurrency, self.synchronous.max_scale) if c]
        return min(caps) if caps else None

    @property
    def kept_warm(self) -> float:
        """Seconds an idle container of the service is kept; 0, a fresh one per job. Kept
        ready ones (`synchronous.min_scale`) stay whatever this says."""
        if self.warm or not self.synchronous.min_scale:
            return float(self.warm)
        return float(SYNC_WARM)

    def provider_names(self) -> set[str]:
        return {io.storage_provider for io in [*self.input, *self.output]}

    def public(self) -> dict[str, Any]:
        """The JSON form with secret values blanked, as OSCAR shows it."""
        data = self.model_dump()
        data["environment"]["secrets"] = {k: "" for k in self.environment.secrets}
        for entries in data["storage_providers"].values():
            for config in entries.values():
                for field in PROVIDER_SECRETS:
                    if config.get(field):
                        config[field] = "hidden"
        return data
