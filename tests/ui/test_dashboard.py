"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a
real `ondrop up`: sign in, apply an FDL, drop two files, watch their jobs succeed, read a
log, download an output, see the chain; a wrong password is refused; and the page asks
nothing of any host but the platform's. Screenshots at 1280 and 390 pixels wide go to
$ONDROP_SCREENSHOTS (the README's come from there), else the test's folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ondrop.client import connection
from ondrop.settings import Settings
from tests.support.servers import unavailable
from tests.support.up import Platform, running

CHROMIUM = "/usr/bin/chromium"
WAIT = 60_000  # ms: a loaded machine
FDL = """
functions:
  oscar:
  - here:
      name: upper
      script: upper.sh
      input:
      - path: words/in
      output:
      - path: words/upper
  - here:
      name: count
      script: |
        wc -c < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").n"
      input:
      - path: words/upper
      output:
      - path: words/counts
"""
UPPER = (
    'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
    'echo "did $(basename "$INPUT_FILE_PATH")"\n'
)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Platform]:
    with running(tmp_path / "data") as platform:
        yield platform


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (make setup installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def password(up: Platform) -> str:
    _, _, found = connection(Settings.load(overrides={"data": up.data}, environ={}))
    assert found
    return found


def test_a_user_signs_in_applies_drops_files_and_watches_their_jobs(
    up: Platform, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT)
    own = urlsplit(up.url).netloc
    elsewhere: list[str] = []

    def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    shots = Path(os.environ.get("ONDROP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.route("**/*", only_here)
    page = context.new_page()
    page.goto(up.url + "/")
    assert page.url.endswith("/ui")

    signin = page.locator("#signin")
    signin.locator("[name=password]").fill("not-the-password")
    signin.locator("button[type=submit]").click()
    expect(page.locator("#signin-error")).to_contain_text("Refused")
    signin.locator("[name=password]").fill(password(up))
    signin.locator("button[type=submit]").click()
    expect(page.get_by_role("heading", name="Services")).to_be_visible()

    page.locator("#apply textarea").fill(FDL.replace("path: words/in", "path: [words/in"))
    page.locator("#apply button[type=submit]").click()
    expect(page.locator("#apply-result")).to_contain_text("not valid YAML at line")
    (tmp_path / "upper.sh").write_text(UPPER)
    page.locator("#apply textarea").fill(FDL)
    page.locator("#apply input[type=file]").set_input_files(str(tmp_path / "upper.sh"))
    page.locator("#apply button[type=submit]").click()
    expect(page.locator("#apply-result")).to_contain_text("created: upper, count")
    expect(page.locator("#apply-result")).to_contain_text("scripts sent: upper.sh")
    # kept in the script's memory: a page of an exposed service (same origin) reads none
    kept = page.evaluate("() => JSON.stringify([sessionStorage, localStorage, document.cookie])")
    assert password(up) not in kept and "Basic" not in kept
    expect(page.locator("tr[data-service=upper]")).to_be_visible()
    expect(page.locator("#chains [data-edge='upper->count']")).to_have_count(1)
    page.screenshot(path=str(shots / "dashboard-services-1280.png"), full_page=True)

    page.locator("tr[data-service=upper] a").click()
    expect(page.get_by_role("heading", name="upper", exact=True)).to_be_visible()
    zone = page.locator("section[data-folder='minio.default:words/in'] .drop")
    dropped = page.evaluate_handle(
        """() => {
            const files = new DataTransfer();
            files.items.add(new File(["hello"], "a.txt", {type: "text/plain"}));
            files.items.add(new File(["dashboard"], "b.txt", {type: "text/plain"}));
            return files;
        }"""
    )
    zone.dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("[data-upload]")).to_have_count(2)
    expect(page.locator("#jobs tbody tr td.status-Succeeded")).to_have_count(2)

    page.locator("#jobs tbody tr a").first.click()
    expect(page.locator("#log-text")).to_contain_text("did ")
    output = page.locator("section[data-folder='minio.default:words/upper'] tr[data-key]")
    expect(output).to_have_count(2)
    with page.expect_download() as caught:
        page.locator("tr[data-key='words/upper/a.txt'] button", has_text="Download").click()
    assert Path(caught.value.path()).read_text() == "HELLO"
    page.screenshot(path=str(shots / "dashboard-service-1280.png"), full_page=True)

    page.goto(up.url + "/ui#/activity")
    expect(page.locator("#activity svg").first).to_be_visible()
    expect(page.locator("#activity")).to_contain_text("jobs in the window")
    page.goto(up.url + "/ui#/pools")
    expect(page.locator("#pools tbody tr")).to_have_count(2)

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(up.url + "/ui#/")
    expect(page.locator("tr[data-service=count]")).to_be_visible()
    page.screenshot(path=str(shots / "dashboard-services-390.png"), full_page=True)
    assert elsewhere == []
    context.close()
