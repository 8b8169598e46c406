"""The reference pages say what the code does: every setting and every field is there, and
the cluster files in docs/cluster/ hold what docs/cluster.md says of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ondrop.fdl.models import Service
from ondrop.settings import markdown, table
from tests.support.servers import unavailable

DOCS = Path(__file__).parent.parent / "docs"


def test_the_settings_page_is_the_table_rendered() -> None:
    page = (DOCS / "settings.md").read_text()
    assert page == markdown(), "docs/settings.md is stale: run `make docs`"
    assert len(table()) == page.count("| `ONDROP_")


def test_the_fdl_page_describes_every_service_field() -> None:
    page = (DOCS / "fdl.md").read_text()
    for field in Service.model_fields:
        assert f"| `{field}` |" in page, field


def test_up_takes_a_flag_for_every_setting_but_the_clients_url() -> None:
    import typer.main

    from ondrop.cli.main import app

    command = typer.main.get_command(app)
    up = command.commands["up"]  # type: ignore[attr-defined]
    flags = {opt for param in up.params for opt in param.opts}
    for env, flag, _default, _meaning in table():
        if env != "ONDROP_URL":
            assert flag in flags, f"ondrop up has no {flag} for {env}"


def commands() -> dict[str, Any]:
    """Every command of `ondrop` by its full name (`image build`)."""
    import typer.main

    from ondrop.cli.main import app

    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:  # a group: it has commands
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[prefix + name] = command

    walk(typer.main.get_command(app), "")
    return found


def test_every_command_has_a_one_line_summary_and_an_example_of_itself() -> None:
    for name, command in commands().items():
        text = command.help or ""
        summary = text.split("\n\n")[0].strip()
        assert "\n" not in summary and summary.endswith("."), f"{name}: {summary!r}"
        examples = [line for line in text.splitlines() if line.startswith("Example: ")]
        assert any(f"ondrop {name}" in line for line in examples), f"{name} has no example"


def test_the_readmes_command_list_names_every_command() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    listed = {line.split("#")[0].strip() for line in block.splitlines() if line.strip()}
    for name in commands():
        assert any(line.startswith(f"ondrop {name}") for line in listed) or (
            name.startswith("image ") and any("ondrop image" in line for line in listed)
        ), f"README's command list lacks `ondrop {name}`"


CLUSTER = DOCS / "cluster"


def test_the_aws_cluster_file_scales_cpu_and_gpu_workers_from_zero_with_this_version() -> None:
    import ondrop

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"] == {"CPU": 0}
    assert {name: t["min_workers"] for name, t in types.items()} == {"cpu": 0, "gpu": 0}
    assert types["gpu"]["resources"] == {"GPU": 1}
    assert "g5." in types["gpu"]["node_config"]["InstanceType"]
    install = " ".join(config["setup_commands"])
    assert f"ondrop-{ondrop.__version__}-py3-none-any.whl[ray]" in install
    assert "ray[default]==" in install  # every node the same Ray


def test_the_aws_cluster_file_is_valid_for_rays_autoscaler() -> None:
    try:
        from ray.autoscaler._private.util import prepare_config
    except ImportError:
        unavailable("Ray is not installed (pip install 'ondrop[ray]'; make setup does)")
    config = prepare_config(yaml.safe_load((CLUSTER / "aws.yaml").read_text()))
    assert set(config["available_node_types"]) == {"ray.head.default", "cpu", "gpu"}


def test_the_kuberay_manifest_autoscales_a_cpu_and_a_gpu_group_from_zero() -> None:
    import ondrop

    manifest = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    spec = manifest["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    aws = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert f"ray[default]=={spec['rayVersion']}" in " ".join(aws["setup_commands"])
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    assert {name: g["minReplicas"] for name, g in groups.items()} == {"cpu": 0, "gpu": 0}

    def limits(group: dict[str, Any]) -> dict[str, Any]:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"].endswith(f":{ondrop.__version__}")
        return dict(container["resources"]["limits"])

    assert limits(groups["gpu"])["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in limits(groups["cpu"])
