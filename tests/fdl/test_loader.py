"""The FDL loader: three shapes in, one Service out; errors name file, service and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ondrop.errors import DefinitionError
from ondrop.fdl import load_file, load_text, parse_service
from ondrop.fdl.models import SYNC_WARM

EXAMPLES = Path(__file__).parent / "examples"


def load(text: str, tmp_path: Path) -> list[object]:
    return list(load_text(text, "svc.yaml", tmp_path).services)


def error_of(text: str, tmp_path: Path) -> str:
    with pytest.raises(DefinitionError) as caught:
        load_text(text, "svc.yaml", tmp_path)
    return str(caught.value)


def test_an_oscar_file_maps_onto_a_service_and_reads_its_script_next_to_it() -> None:
    definition = load_file(EXAMPLES / "oscar-grayify" / "grayify.yaml")
    (service,) = definition.services
    assert service.name == "grayify"
    assert service.image == "ghcr.io/grycap/imagemagick"
    assert service.script.startswith('#!/bin/bash\necho "SCRIPT: Invoked File Function')
    assert service.memory == "1Gi" and service.memory_bytes == 1024**3
    assert service.cpu == "1.0"
    assert service.log_level == "CRITICAL"
    assert service.environment.variables == {"QUALITY": "80", "VERBOSE": "true"}
    assert service.environment.secrets == {"API_KEY": "abcdef123"}
    assert service.input[0].storage_provider == "minio.default"
    assert service.input[0].suffix == [".jpg", ".png"]
    assert [o.storage_provider for o in service.output] == ["minio.default", "minio.elsewhere"]


def test_an_oscar_file_copies_only_the_providers_its_services_use() -> None:
    (service,) = load_file(EXAMPLES / "oscar-grayify" / "grayify.yaml").services
    assert set(service.storage_providers["minio"]) == {"elsewhere"}
    assert service.storage_providers["minio"]["elsewhere"]["secret_key"] == "very-secret"


def test_oscar_fields_ondrop_does_not_run_are_warnings_that_name_the_field() -> None:
    definition = load_file(EXAMPLES / "oscar-grayify" / "grayify.yaml")
    warned = "\n".join(definition.warnings)
    assert "service 'grayify': field 'enable_sgx': not supported by ondrop" in warned
    # vo is ondrop's too: the service is for that VO's members
    assert "vo" not in warned and definition.services[0].vo == "vo.example.eu"
    # Fields set to nothing (alpine: false, synchronous all zero) ask for nothing.
    assert "alpine" not in warned and "synchronous" not in warned


def test_a_scar_file_maps_execution_modes_memory_scripts_and_batch_resources() -> None:
    definition = load_file(EXAMPLES / "scar-video" / "scar-video-process.yaml")
    split, detect = definition.services
    assert (split.name, split.mode, split.image) == (
        "scar-batch-ffmpeg-split",
        "batch",
        "grycap/ffmpeg",
    )
    assert split.cpu == "2" and split.memory == "1024Mi"  # from the batch section
    assert "ffmpeg -i" in split.script
    assert (detect.mode, detect.memory, detect.timeout) == ("hybrid", "3008Mi", 600)
    assert detect.log_level == "DEBUG"
    assert detect.environment.variables == {"THRESHOLD": "0.5"}
    assert split.output[0].path == detect.input[0].path == "scar-ffmpeg/split"


def test_scar_aws_settings_and_its_bare_s3_are_reported_not_dropped() -> None:
    warned = "\n".join(load_file(EXAMPLES / "scar-video" / "scar-video-process.yaml").warnings)
    assert "field 'iam': AWS-specific section; ignored" in warned
    assert "field 'lambda.supervisor': AWS Lambda setting; ignored" in warned
    assert "field 'batch.compute_resources': AWS Batch setting; ignored" in warned
    assert "field 'input.0.storage_provider': SCAR's 's3'" in warned


def test_ondrops_own_shape_takes_its_added_fields(tmp_path: Path) -> None:
    (service,) = load(
        """
services:
  - name: thumbs
    script: echo hi
    mode: hybrid
    timeout: 30
    retries: 2
    max_concurrency: 3
    input: [{path: photos/in}]
""",
        tmp_path,
    )
    assert service.mode == "hybrid"  # type: ignore[attr-defined]
    assert (service.timeout, service.retries, service.max_concurrency) == (  # type: ignore[attr-defined]
        30,
        2,
        3,
    )
    assert service.input[0].storage_provider == "minio.default"  # type: ignore[attr-defined]
    assert service.script == "echo hi"  # type: ignore[attr-defined]


def test_a_bare_list_of_services_is_ondrops_shape_too(tmp_path: Path) -> None:
    services = load("- {name: a, script: 'true'}\n- {name: b, script: 'true'}\n", tmp_path)
    assert [s.name for s in services] == ["a", "b"]  # type: ignore[attr-defined]


def test_a_multi_line_script_is_inline_and_a_file_name_is_read(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo from file\n")
    inline, from_file = load(
        """
services:
  - {name: a, script: "echo one\\necho two\\n"}
  - {name: b, script: run.sh}
""",
        tmp_path,
    )
    assert inline.script == "echo one\necho two\n"  # type: ignore[attr-defined]
    assert from_file.script == "echo from file\n"  # type: ignore[attr-defined]


def test_a_missing_script_file_names_the_file_service_and_where_it_looked(tmp_path: Path) -> None:
    message = error_of("services: [{name: a, script: missing.sh}]", tmp_path)
    assert message.startswith("svc.yaml: service 'a': field 'script': script file 'missing.sh'")
    assert str(tmp_path / "missing.sh") in message


def test_malformed_yaml_says_where(tmp_path: Path) -> None:
    message = error_of("services:\n  - name: a\n   script: [unclosed\n", tmp_path)
    assert message.startswith("svc.yaml: not valid YAML at line 3")


def test_an_unknown_field_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    message = error_of("services: [{name: a, script: x y, imagee: busybox}]", tmp_path)
    assert message == "svc.yaml: service 'a': field 'imagee': unknown field; did you mean 'image'?"


def test_a_wrong_value_names_the_field_and_what_was_expected(tmp_path: Path) -> None:
    message = error_of("functions: {oscar: [{c: {name: a, script: x y, memory: lots}}]}", tmp_path)
    assert "service 'a': field 'memory': expected a size such as 256Mi or 1G, got 'lots'" in message


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("retries: many", "field 'retries': must be a whole number, not 'many'"),
        ("retries: 500", "field 'retries': must be at most 100, not 500"),
        ("environment: [1, 2]", "field 'environment': must be a mapping (NAME: value, ...)"),
        ("name: 'A B'", "field 'name': must match the pattern ^[a-z0-9]([a-z0-9_-]{0,61}"),
    ],
)
def test_a_wrong_value_is_told_in_ondrops_words(tmp_path: Path, field: str, message: str) -> None:
    fields = {"name": "a", "script": "x y"}
    key = field.split(":", 1)[0]
    entry = ", ".join(f"{k}: {v}" for k, v in fields.items() if k != key)
    text = error_of(f"services: [{{{entry}, {field}}}]", tmp_path)
    assert message in text and "should be" not in text


def test_an_unknown_provider_type_is_an_error(tmp_path: Path) -> None:
    message = error_of(
        "services: [{name: a, script: x y, input: [{storage_provider: ftp.x, path: in}]}]",
        tmp_path,
    )
    assert "field 'input.0.storage_provider'" in message
    assert "unknown storage provider type 'ftp'" in message


def test_every_error_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    message = error_of(
        """
services:
  - {name: a, script: x y, timeout: -1}
  - {name: B!, script: x y}
""",
        tmp_path,
    )
    assert "service 'a': field 'timeout'" in message
    assert "service 'B!': field 'name'" in message


def test_the_same_name_twice_is_an_error_but_one_service_per_oscar_cluster_is_kept(
    tmp_path: Path,
) -> None:
    assert "same name" in error_of(
        "services: [{name: a, script: x y}, {name: a, script: x y}]", tmp_path
    )
    definition = load_text(
        "functions: {oscar: [{edge: {name: a, script: 'echo 1'}}, {core: {name: a, script: "
        "'echo 2'}}]}",
        "f.yaml",
        tmp_path,
    )
    assert [s.script for s in definition.services] == ["echo 1"]
    assert "also defined for OSCAR cluster 'core'" in definition.warnings[0]


def test_a_service_needs_something_to_run(tmp_path: Path) -> None:
    assert "give a script, an image, or both" in error_of("services: [{name: a}]", tmp_path)


def test_files_that_are_not_fdl_are_refused_clearly(tmp_path: Path) -> None:
    assert "unknown top-level field 'apiVersion'" in error_of(
        "apiVersion: v1\nkind: Pod\n", tmp_path
    )
    assert "defines no services" in error_of("functions: {oscar: []}", tmp_path)
    assert "expected an FDL mapping" in error_of("just text", tmp_path)


def test_windows_line_ends_and_trailing_tabs_are_accepted(tmp_path: Path) -> None:
    (service,) = load(
        "services:\r\n  - name: a\r\n    script: 'x y'\r\n    log_level: ERROR\t\r\n", tmp_path
    )
    assert service.log_level == "ERROR"  # type: ignore[attr-defined]


def test_a_service_json_from_oscars_api_is_accepted_with_its_empty_fields() -> None:
    service, warnings = parse_service(
        {
            "name": "cowsay",
            "image": "ghcr.io/grycap/cowsay",
            "script": "cowsay hi",
            "cpu": "0.2",
            "memory": "256Mi",
            "enable_gpu": False,
            "alpine": False,
            "synchronous": {"min_scale": 0, "max_scale": 0},
            "mount": {"storage_provider": "", "path": ""},
            "input": None,
            "output": None,
            "token": "",
            "environment": {"variables": {"A": "1"}, "secrets": {}},
            "cluster_id": "oscar",
            "expose": {"min_scale": 0, "max_scale": 0, "api_port": 0},
        }
    )
    assert (service.name, service.input, warnings) == ("cowsay", [], [])
    assert service.environment.variables == {"A": "1"}


def test_enable_gpu_asks_for_one_gpu() -> None:
    service, _ = parse_service({"name": "g", "script": "x y", "enable_gpu": True})
    assert service.gpu == 1


def test_public_form_hides_secrets() -> None:
    (service,) = load_file(EXAMPLES / "oscar-grayify" / "grayify.yaml").services
    shown = service.public()
    assert shown["environment"]["secrets"] == {"API_KEY": ""}
    assert shown["storage_providers"]["minio"]["elsewhere"]["secret_key"] == "hidden"
    assert shown["storage_providers"]["minio"]["elsewhere"]["access_key"] == "hidden"
    assert "very-secret" not in str(shown) and "abcdef123" not in str(shown)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
FIELDS = [
    "name",
    "script",
    "image",
    "memory",
    "cpu",
    "input",
    "output",
    "environment",
    "storage_providers",
    "timeout",
    "mode",
    "enable_gpu",
    "synchronous",
    "log_level",
]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_any_service_json_is_accepted_or_refused_with_a_definition_error(
    raw: dict[str, object],
) -> None:
    try:
        parse_service({"name": "fuzz", "script": "true", **raw})
    except DefinitionError as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_yaml_document_is_loaded_or_refused_with_a_definition_error(data: object) -> None:
    text = yaml.safe_dump({"services": [data]} if isinstance(data, dict) else data)
    try:
        load_text(text, "fuzz.yaml", Path("/nonexistent"))
    except DefinitionError as exc:
        assert str(exc).startswith("fuzz.yaml")


def test_the_demos_detect_runs_on_batch_with_a_gpu_and_on_faas_without() -> None:
    from ondrop.events.base import object_event
    from ondrop.pools.router import Router

    demo = Path(__file__).parents[2] / "examples" / "video-objects"
    for fdl in ("video-objects.yaml", "video-objects-container.yaml"):
        services = {s.name: s for s in load_file(demo / fdl).services}
        assert services["summary"].collect == "detect" and not services["summary"].input
        frame = object_event("minio.default", "videos/frames/a-t00000000.jpg", "1", 10)
        assert Router(gpus=True).pool_for(services["detect"], frame) == "batch"
        assert Router(gpus=False).pool_for(services["detect"], frame) == "faas"


def test_a_definition_stored_by_an_older_ondrop_is_read_back_as_it_was_applied() -> None:
    """A provider endpoint checked only since a later version never stops a start: the
    stored definition is read back; a new apply of it is refused, naming the field."""
    from ondrop.fdl.models import Service

    data = {
        "name": "old",
        "script": "true",
        "input": [{"storage_provider": "minio.x", "path": "b/in"}],
        "storage_providers": {"minio": {"x": {"endpoint": ""}}},
    }
    assert Service.model_validate(data, context={"stored": True}).name == "old"
    with pytest.raises(DefinitionError, match=r"minio\.x\.endpoint: is blank or missing"):
        parse_service(data)


def test_synchronous_keeps_containers_ready_and_caps_the_jobs_at_once(tmp_path: Path) -> None:
    # OSCAR's docs/fdl.md, SynchronousSettings: min_scale and max_scale, 0 (unlimited) unset.
    service, warnings = parse_service(
        {"name": "s", "script": "x y", "synchronous": {"min_scale": 2, "max_scale": 3}}
    )
    assert warnings == []
    assert (service.synchronous.min_scale, service.cap, service.kept_warm) == (2, 3, SYNC_WARM)
    capped, _ = parse_service(
        {"name": "s", "script": "x", "max_concurrency": 2, "synchronous": {"max_scale": 5}}
    )
    assert capped.cap == 2  # the lower of the two
    own, _ = parse_service({"name": "s", "script": "x", "warm": 5, "synchronous": {"min_scale": 1}})
    assert own.kept_warm == 5.0  # the service's own `warm` says how long idle ones stay
    plain, _ = parse_service({"name": "s", "script": "x", "synchronous": None})
    assert (plain.cap, plain.kept_warm, plain.synchronous.min_scale) == (None, 0.0, 0)
    message = error_of(
        "services: [{name: a, script: x y, synchronous: {min_scale: 4, max_scale: 2}}]", tmp_path
    )
    assert "service 'a': field 'synchronous': max_scale (2) is below min_scale (4)" in message
    assert "must be at most 100" in error_of(
        "services: [{name: a, script: x y, synchronous: {min_scale: 500}}]", tmp_path
    )
