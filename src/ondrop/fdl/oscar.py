"""OSCAR's service shape (FDL entries and the service JSON of its API) onto `Service`."""

from __future__ import annotations

from typing import Any

from ondrop.fdl.models import Service
from ondrop.fdl.problems import Report, is_unset

# OSCAR service fields ondrop does not act on (yet); set to something, they are warned about.
UNSUPPORTED = {
    "total_memory": "per-service resource totals",
    "total_cpu": "per-service resource totals",
    "ephemeral_storage_request": "Kubernetes ephemeral storage",
    "enable_sgx": "SGX enclaves",
    "image_prefetch": "image pre-pulling",
    "mount": "mounting a bucket into the container",
    "volume": "managed volumes",
    "kserve": "KServe inference services",
    "annotations": "Kubernetes annotations",
    "labels": "Kubernetes labels",
    "image_pull_secrets": "registry pull secrets",
    "isolation_level": "per-user bucket isolation",
    "interlink_node_name": "InterLink offloading",
    "federation": "federated replicas",
    "replicas": "replicas on other clusters",
    "delegation": "delegation to other clusters",
    "rescheduler_threshold": "rescheduling to other clusters",
    "alpine": "Alpine builds of the supervisor (not needed: the supervisor runs outside)",
    "file_stage_in": "skipping the input download",
    "clusters": "other OSCAR clusters",
    "bucket_list": "bucket lists",
    "namespace": "Kubernetes namespaces",
    "volume_status": "managed volumes",
    "deployment": "deployment status",
}
# Written by oscar-cli or SCAR next to the service; not the service's own settings.
IGNORED = {"cluster_id", "endpoint", "auth_user", "auth_password", "ssl_verify"}
OWN_FIELDS = set(Service.model_fields)
# OSCAR's service fields ondrop does not act on, as a service item shows them: what OSCAR
# writes when they are not set (its Go zero values; the owner and isolation of an admin's
# service). A field given back with this value, as clients that read a service, change it
# and send it back do, asks for nothing.
SHOWN = {
    "cluster_id": "",
    "total_memory": "",
    "total_cpu": "",
    "ephemeral_storage_request": "",
    "enable_sgx": False,
    "image_prefetch": False,
    "alpine": False,
    "file_stage_in": False,
    "image_pull_secrets": [],
    "labels": {},
    "annotations": {},
    "isolation_level": "SERVICE",
    "bucket_list": [],
    "interlink_node_name": "",
    "mount": {"storage_provider": "", "path": ""},
}


# What OSCAR shows of a service that is not exposed (given back, it asks for nothing).
NOT_EXPOSED = {
    "min_scale": 0,
    "max_scale": 0,
    "api_port": 0,
    "cpu_threshold": 0,
    "rewrite_target": False,
    "default_command": False,
    "set_auth": False,
    "health_path": "",
}


def item(service: Service) -> dict[str, Any]:
    """A service as OSCAR's API lists it: ondrop's fields (secrets hidden) with OSCAR's
    beside them, `enable_gpu` from `gpu`."""
    shown = {**SHOWN, "enable_gpu": service.gpu > 0, **service.public()}
    if service.expose is None:
        shown["expose"] = NOT_EXPOSED
    return shown


# Maps whose values are the user's text: a null value there is the empty string.
TEXT_MAPS = {("environment", "variables"), ("environment", "secrets")}


def without_nulls(value: Any, path: tuple[str, ...] = ()) -> Any:
    """`value` with every null left out: Go's JSON (oscar-cli, the OSCAR dashboard) writes an
    empty map, list or string as `null`, and YAML writes `key:` with nothing after it so.
    A null is "not given", so the field takes its default; in a map of the user's text
    (environment variables and secrets) it is the empty string."""
    if isinstance(value, dict):
        if path in TEXT_MAPS:
            return {k: "" if v is None else v for k, v in value.items()}
        return {k: without_nulls(v, (*path, str(k))) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v, path) for v in value if v is not None]
    return value


def map_service(raw: dict[str, Any], report: Report) -> dict[str, Any]:
    """The fields of an OSCAR (or ondrop) service entry that `Service` takes, with
    OSCAR-only fields translated or reported; nulls mean "not given" (`without_nulls`)."""
    mapped: dict[str, Any] = {}
    for key, value in without_nulls(raw).items():
        key = str(key)
        if key in OWN_FIELDS:
            mapped[key] = value
        elif key == "enable_gpu":
            if value:
                mapped.setdefault("gpu", 1)
        elif key in IGNORED:
            continue
        elif key in UNSUPPORTED:
            if not is_unset(value) and value != SHOWN.get(key):
                report.warn(key, f"not supported by ondrop ({UNSUPPORTED[key]}); ignored")
        else:
            report.unknown(key, OWN_FIELDS | set(UNSUPPORTED) | {"enable_gpu"})
    for io_field in ("input", "output"):
        entries = mapped.get(io_field)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and "options" in entry:
                entry = dict(entry)
                if not is_unset(entry.pop("options")):
                    report.warn(f"{io_field}.{i}.options", "mount options are ignored")
                mapped[io_field][i] = entry
    return mapped
