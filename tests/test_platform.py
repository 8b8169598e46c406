"""The platform as a whole: its data folder, credentials and life cycle."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ondrop.api.auth import admin_credentials
from ondrop.client import connection
from ondrop.errors import ConflictError, DefinitionError
from ondrop.platform import Platform
from ondrop.settings import Settings


def test_a_second_platform_on_the_same_data_folder_is_refused(settings: Settings) -> None:
    first = Platform(settings)
    first.start()
    try:
        second = Platform(settings)
        with pytest.raises(ConflictError) as caught:
            second.start()
        assert "another ondrop" in str(caught.value) and str(settings.data) in str(caught.value)
        second.store.close()
    finally:
        first.stop()
    again = Platform(settings)  # the lock goes with the first one
    again.start()
    again.stop()


def test_the_data_folder_and_store_are_private(tmp_path: Path) -> None:
    settings = Settings.load({"data": tmp_path / "fresh"}, environ={})
    platform = Platform(settings)
    platform.start()
    platform.stop()
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "fresh" / "ondrop.db").stat().st_mode) == 0o600


def test_a_data_folder_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DefinitionError) as caught:
        Platform(Settings.load({"data": tmp_path / "file"}, environ={}))
    assert "cannot use" in str(caught.value)


def test_generated_credentials_and_the_user_name_are_kept(tmp_path: Path) -> None:
    first = admin_credentials(Settings.load({"data": tmp_path, "admin_user": "bob"}, environ={}))
    again = admin_credentials(Settings.load({"data": tmp_path}, environ={}))
    assert (again.user, again.password) == ("bob", first.password)
    assert stat.S_IMODE((tmp_path / "admin.json").stat().st_mode) == 0o600
    _url, user, password = connection(Settings.load({"data": tmp_path}, environ={}))
    assert (user, password) == ("bob", first.password)


def test_a_given_password_is_used_and_never_written(tmp_path: Path) -> None:
    creds = admin_credentials(
        Settings.load({"data": tmp_path, "admin_password": "given"}, environ={})
    )
    assert creds.password == "given"
    assert not (tmp_path / "admin.json").exists()


def test_corrupt_credentials_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "admin.json").write_text("{not json")
    with pytest.raises(DefinitionError) as caught:
        admin_credentials(Settings.load({"data": tmp_path}, environ={}))
    assert "remove the file" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ONDROP_PORT": "99999"}, "port 99999"),
        ({"ONDROP_CONCURRENCY": "-1"}, "negative"),
        ({"ONDROP_LOG_LEVEL": "loud"}, "log_level 'loud'"),
        ({"ONDROP_MAX_UPLOAD": "lots"}, "ONDROP_MAX_UPLOAD"),
        ({"ONDROP_PORT": "x"}, "ONDROP_PORT"),
        ({"ONDROP_RUN_IMAGES_ON_HOST": "maybe"}, "true or false"),
        ({"ONDROP_STORE": "mysql://me:pw@db/jobs"}, "store 'mysql://me@db/jobs' is neither"),
        ({"ONDROP_SHARED_FOLDER": "/mnt/ondrop"}, "shared_folder is for several control planes"),
        (
            {"ONDROP_SHARED_FOLDER": "shared", "ONDROP_STORE": "postgresql://me:pw@db/jobs"},
            "shared_folder 'shared' is not an absolute path",
        ),
    ],
)
def test_bad_settings_are_refused_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Settings.load(environ=env)
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)  # a password in a setting is never repeated


def test_settings_come_from_overrides_then_environment_then_defaults(tmp_path: Path) -> None:
    env = {"ONDROP_PORT": "9000", "ONDROP_MAX_UPLOAD": "2Mi", "ONDROP_DATA": str(tmp_path)}
    loaded = Settings.load({"port": 9100}, environ=env)
    assert (loaded.port, loaded.max_upload, loaded.data) == (9100, 2 * 1024**2, tmp_path)
    assert Settings.load(environ={}).host == "127.0.0.1"
    assert json.dumps(str(loaded.data))
