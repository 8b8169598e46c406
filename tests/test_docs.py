"""The reference pages say what the code does: every setting and every field is there."""

from __future__ import annotations

from pathlib import Path

from ondrop.fdl.models import Service
from ondrop.settings import table

DOCS = Path(__file__).parent.parent / "docs"


def test_the_settings_page_lists_every_setting_as_the_table_says() -> None:
    page = (DOCS / "settings.md").read_text()
    for env, flag, default, meaning in table():
        assert f"| `{env}` | `{flag}` | `{default}` | {meaning} |" in page, env


def test_the_fdl_page_describes_every_service_field() -> None:
    page = (DOCS / "fdl.md").read_text()
    for field in Service.model_fields:
        assert f"| `{field}` |" in page, field
