"""SCAR's function shape (`functions: aws: - lambda: ...`) onto `Service` fields."""

from __future__ import annotations

from typing import Any

from ondrop.fdl.problems import Report, is_unset

MODES = {"lambda": "faas", "batch": "batch", "lambda-batch": "hybrid"}
LAMBDA_FIELDS = {
    "name",
    "container",
    "image",
    "init_script",
    "execution_mode",
    "memory",
    "timeout",
    "log_level",
    "input",
    "output",
}
# Lambda settings that only mean something on AWS: warned about when set.
LAMBDA_AWS = {
    "run_script",
    "c_args",
    "environment",
    "supervisor",
    "runtime",
    "architectures",
    "layers",
    "deployment",
    "vpc",
    "file_system",
    "boto_profile",
    "region",
    "description",
    "invocation_type",
    "asynchronous",
    "log_type",
    "extra_payload",
    "preheat",
    "handler",
    "tags",
    "arn",
    "config_path",
}
CONTAINER_FIELDS = {
    "image",
    "image_file",
    "environment",
    "timeout_threshold",
    "alpine",
    "create_image",
}
BATCH_MAPPED = {"vcpus", "memory", "enable_gpu"}
SECTIONS_AWS = {"iam", "api_gateway", "cloudwatch", "ecr"}


def map_function(entry: dict[str, Any], report: Report) -> dict[str, Any]:
    """The `Service` fields of one `functions.aws` item (its `lambda` and sibling sections)."""
    for key in entry:
        if key in SECTIONS_AWS:
            if not is_unset(entry[key]):
                report.warn(key, "AWS-specific section; ignored")
        elif key not in {"lambda", "batch"}:
            report.unknown(str(key), {"lambda", "batch", *SECTIONS_AWS})
    lam = entry.get("lambda")
    if not isinstance(lam, dict):
        report.error("lambda", "is required and must be a mapping")
        return {}
    mapped: dict[str, Any] = {}
    for key, value in lam.items():
        if key in LAMBDA_AWS:
            if not is_unset(value):
                report.warn(f"lambda.{key}", "AWS Lambda setting; ignored")
        elif key not in LAMBDA_FIELDS:
            report.unknown(f"lambda.{key}", LAMBDA_FIELDS | LAMBDA_AWS)
    for key in ("name", "timeout", "log_level", "input", "output"):
        if key in lam:
            mapped[key] = lam[key]
    if "init_script" in lam:
        mapped["script"] = lam["init_script"]
    if isinstance(lam.get("memory"), int):
        mapped["memory"] = f"{lam['memory']}Mi"  # SCAR gives megabytes
    elif "memory" in lam:
        mapped["memory"] = lam["memory"]
    mode = lam.get("execution_mode", "lambda")
    if not isinstance(mode, str) or mode not in MODES:
        report.error(
            "lambda.execution_mode", f"expected lambda, batch or lambda-batch, got {mode!r}"
        )
    else:
        mapped["mode"] = MODES[mode]
    container = lam.get("container") or {}
    if not isinstance(container, dict):
        report.error("lambda.container", "must be a mapping")
        container = {}
    for key, value in container.items():
        if key not in CONTAINER_FIELDS:
            report.unknown(f"lambda.container.{key}", CONTAINER_FIELDS)
        elif key in {"image_file", "timeout_threshold", "alpine", "create_image"} and (
            not is_unset(value) and key != "create_image"
        ):
            report.warn(f"lambda.container.{key}", "not supported by ondrop; ignored")
    image = container.get("image") or lam.get("image")
    if image:
        mapped["image"] = image
    if container.get("environment"):
        mapped["environment"] = container["environment"]
    _map_batch(entry.get("batch"), mapped, report)
    for io_field in ("input", "output"):
        for i, io in enumerate(mapped.get(io_field) or []):
            if isinstance(io, dict) and io.get("storage_provider", "s3") == "s3":
                mapped[io_field][i] = {**io, "storage_provider": "minio.default"}
                report.warn(
                    f"{io_field}.{i}.storage_provider",
                    "SCAR's 's3' (the AWS account's S3) is mapped to the platform's default "
                    "store minio.default; name a provider such as s3.mine to use another",
                )
    return mapped


def _map_batch(batch: Any, mapped: dict[str, Any], report: Report) -> None:
    if batch is None:
        return
    if not isinstance(batch, dict):
        report.error("batch", "must be a mapping")
        return
    uses_batch = mapped.get("mode") in {"batch", "hybrid"}
    for key, value in batch.items():
        if key not in BATCH_MAPPED:
            if not is_unset(value):
                report.warn(f"batch.{key}", "AWS Batch setting; ignored")
            continue
        if key == "enable_gpu" and value:
            mapped["gpu"] = 1
        elif key == "vcpus" and uses_batch:
            mapped["cpu"] = str(value)
        elif key == "memory" and uses_batch and isinstance(value, int):
            mapped["memory"] = f"{value}Mi"
