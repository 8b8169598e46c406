"""The reference pages say what the code does: every setting and every field is there."""

from __future__ import annotations

from pathlib import Path

from ondrop.fdl.models import Service
from ondrop.settings import markdown, table

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
