"""POST /system/apply with an FDL's text (what the dashboard sends): read as `ondrop
apply` reads a file, its scripts only those sent beside it, never a file of the server."""

from __future__ import annotations

import httpx
import pytest

FDL = """
functions:
  oscar:
  - mine:
      name: shout
      script: shout.sh
      input:
      - storage_provider: minio.default
        path: shout/in
"""


def test_an_fdl_with_its_script_sent_beside_it_applies(api: httpx.Client) -> None:
    script = "tr a-z A-Z < $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/out\n"
    answer = api.post("/system/apply", json={"fdl": FDL, "scripts": {"shout.sh": script}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == ["shout"]
    assert api.get("/system/services/shout").json()["script"] == script


@pytest.mark.parametrize(
    ("written", "sent"),
    [("./shout.sh", "shout.sh"), ("scripts/shout.sh", "shout.sh"), ("shout.sh", "./shout.sh")],
)
def test_a_script_sent_by_its_file_name_is_found_whatever_folder_the_fdl_names(
    api: httpx.Client, written: str, sent: str
) -> None:
    """A browser sends a chosen file by its name alone."""
    fdl = FDL.replace("shout.sh", written)
    answer = api.post("/system/apply", json={"fdl": fdl, "scripts": {sent: "echo hi\n"}})
    assert answer.status_code == 200, answer.text
    assert api.get("/system/services/shout").json()["script"] == "echo hi\n"


@pytest.mark.parametrize(
    "body",
    [
        {"services": "text"},
        {"services": [], "fdl": FDL},
        {},
        [],
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(api: httpx.Client, body: object) -> None:
    answer = api.post("/system/apply", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "services: expected a list" in detail or 'or {"fdl": text}' in detail


@pytest.mark.parametrize(
    ("fdl", "scripts", "says"),
    [
        (FDL, {}, "script file 'shout.sh' was not sent with the FDL (sent: none)"),
        (FDL, {"other.sh": "true"}, "was not sent with the FDL (sent: other.sh)"),
        (FDL.replace("shout.sh", "/etc/passwd"), {}, "'/etc/passwd' was not sent"),
        (FDL.replace("shout.sh", "../../etc/passwd"), {}, "was not sent with the FDL"),
        (FDL + "      build: .\n", {"shout.sh": "true"}, "builds no image"),
        ("functions: [oops", {}, "the FDL: not valid YAML at line 1"),
        (FDL, {"shout.sh": 3}, "scripts: expected {file name: the script's text}"),
        (7, {}, "fdl: expected the FDL's text"),
        ("a: &a [x, x]\nb: &b [*a, *a]\nservices: [*b]\n", {}, "takes no aliases (*name)"),
        ("#" * (1 << 20) + "\n", {}, "an FDL may have 1,048,576"),
    ],
)
def test_a_wrong_fdl_is_refused_naming_what_and_changes_nothing(
    api: httpx.Client, fdl: object, scripts: object, says: str
) -> None:
    answer = api.post("/system/apply", json={"fdl": fdl, "scripts": scripts})
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["detail"]
    assert api.get("/system/services").json() == []
