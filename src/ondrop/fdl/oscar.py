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
    "synchronous": "Knative scaling of synchronous services",
    "expose": "exposed long-running services",
    "mount": "mounting a bucket into the container",
    "volume": "managed volumes",
    "kserve": "KServe inference services",
    "annotations": "Kubernetes annotations",
    "labels": "Kubernetes labels",
    "image_pull_secrets": "registry pull secrets",
    "vo": "EGI virtual organisations",
    "allowed_users": "per-user access",
    "visibility": "per-user visibility",
    "isolation_level": "per-user bucket isolation",
    "interlink_node_name": "InterLink offloading",
    "federation": "federated replicas",
    "replicas": "replicas on other clusters",
    "delegation": "delegation to other clusters",
    "rescheduler_threshold": "rescheduling to other clusters",
    "alpine": "Alpine builds of the supervisor (not needed: the supervisor runs outside)",
    "file_stage_in": "skipping the input download",
    "clusters": "other OSCAR clusters",
    "owner": "owners (there is one admin)",
    "bucket_list": "bucket lists",
    "namespace": "Kubernetes namespaces",
    "volume_status": "managed volumes",
    "deployment": "deployment status",
}
# Written by oscar-cli or SCAR next to the service; not the service's own settings.
IGNORED = {"cluster_id", "endpoint", "auth_user", "auth_password", "ssl_verify"}
OWN_FIELDS = set(Service.model_fields)


def map_service(raw: dict[str, Any], report: Report) -> dict[str, Any]:
    """The fields of an OSCAR (or ondrop) service entry that `Service` takes, with
    OSCAR-only fields translated or reported."""
    mapped: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key in OWN_FIELDS:
            mapped[key] = value
        elif key == "enable_gpu":
            if value:
                mapped.setdefault("gpu", 1)
        elif key in IGNORED:
            continue
        elif key in UNSUPPORTED:
            if not is_unset(value):
                report.warn(key, f"not supported by ondrop ({UNSUPPORTED[key]}); ignored")
        else:
            report.unknown(key, OWN_FIELDS | set(UNSUPPORTED) | {"enable_gpu"})
    for io_field in ("input", "output"):
        if mapped.get(io_field) is None and io_field in mapped:
            mapped[io_field] = []  # OSCAR's JSON writes null for "none"
        entries = mapped.get(io_field)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and "options" in entry:
                entry = dict(entry)
                if not is_unset(entry.pop("options")):
                    report.warn(f"{io_field}.{i}.options", "mount options are ignored")
                mapped[io_field][i] = entry
    return mapped
