"""End to end in a real browser: the app started as `visionledger app` starts it, on the line-run catalog;
Playwright drives Debian's chromium to log in through the form as an auditor, trace a rejected part (typed on
the Trace page, and reached in two clicks from a disagreement on Performance), download its JSON report, be told
briefly that a part id with a control character names no part, and log out, saving screenshots to
``test-artifacts/`` at the repository root."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from apps.ui.roles import DEV_VIEWER
from tests.apps.ui.conftest import PASSWORD
from tests.builders import free_port

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT_S = 90
WAIT_MS = 60_000

if not CHROMIUM.is_file():
    pytest.skip(f"no {CHROMIUM}: install Debian's chromium package (apt-get install chromium) for the browser test",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install '.[dev]'")


@pytest.fixture
def served_app(ui_catalog, tmp_path):
    """``(url, cat, engine_id, streamlit_command)``: the real app served by `visionledger app` on a free port, with
    its login; the command line the CLI started Streamlit with."""
    cat, database, engine_id = ui_catalog
    port = free_port()
    env = {k: v for k, v in database.env().items() if k != DEV_VIEWER}
    log = (tmp_path / "streamlit.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "apps.cli", "app", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited with {server.returncode}:\n{(tmp_path / 'streamlit.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {START_TIMEOUT_S} s:\n"
                            f"{(tmp_path / 'streamlit.log').read_text()}")
            time.sleep(0.5)
        [child] = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        yield url, cat, engine_id, Path(f"/proc/{child}/cmdline").read_text().split("\0")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and anything it started
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def lineage(cat, engine_id: str) -> tuple[str, str, str]:
    """A rejected part, and the dataset version id and manifest hash behind the engine, read here directly."""
    with cat.db.connect() as conn:
        part_id = conn.exec_driver_sql("SELECT part_id FROM projections.part_dispositions WHERE decision = 'reject'"
                                       " ORDER BY part_id LIMIT 1").scalar_one()
        version_id, manifest_hash = conn.exec_driver_sql(
            "SELECT d.version_id, d.manifest_hash FROM projections.engines e JOIN projections.dataset_versions d"
            " ON d.version_id = e.dataset_version_id WHERE e.engine_id = %(e)s", {"e": engine_id}).one()
    return part_id, version_id, manifest_hash


def snap(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls its main block, not the document, so the viewport is
    stretched to the block's height for the picture."""
    page.wait_for_timeout(1500)  # let images and charts paint
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 1000")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 12_000)})
    page.wait_for_timeout(500)
    page.screenshot(path=ARTIFACTS / name, full_page=True)
    page.set_viewport_size(size)


def test_an_auditor_logs_in_and_traces_a_rejected_part_in_the_browser(served_app) -> None:
    url, cat, engine_id, streamlit_command = served_app
    # A short message, no stack trace, SQL or paths: apps/ui/.streamlit/config.toml, which no flag overrides.
    assert "--client.showErrorDetails" not in streamlit_command
    part_id, version_id, manifest_hash = lineage(cat, engine_id)
    ARTIFACTS.mkdir(exist_ok=True)
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(url)
            page.get_by_label("User name", exact=True).fill("audrey")
            page.get_by_label("Password", exact=True).fill("not the password at all")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("wrong user name or password")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_label("Password", exact=True)).to_have_value("")  # never kept in the form
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("signed in as")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Audrey")).to_be_visible(timeout=WAIT_MS)
            snap(page, "logged-in.png")

            # Trace: typed into the page.
            page.get_by_role("link", name="Trace", exact=True).click()
            box = page.locator('input[aria-label="Part id"]')
            expect(box).to_be_visible(timeout=WAIT_MS)
            box.fill(part_id)
            box.press("Enter")
            expect(page.get_by_text("seen-by-cam2").first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text(version_id).first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("in the training split").first).to_be_visible(timeout=WAIT_MS)
            assert f"part={part_id}" in page.url  # the trace can be shared by its address
            snap(page, "trace-rejected-part.png")

            with page.expect_download(timeout=WAIT_MS) as download:
                page.get_by_role("button", name="Download JSON").click()
            report = ARTIFACTS / "trace-rejected-part.json"
            download.value.save_as(report)
            chain = json.loads(report.read_text())["chains"][0]
            assert chain["dataset_version"]["version_id"] == version_id
            assert chain["dataset_version"]["manifest_hash"] == manifest_hash

            # Performance: a disagreement, then its trace, in two clicks.
            page.get_by_role("link", name="Performance", exact=True).click()
            expect(page.get_by_text("Confusion matrix").first).to_be_visible(timeout=WAIT_MS)
            link = page.get_by_role("link", name=re.compile(r"^Trace \S+$")).first  # not the sidebar's "Trace"
            expect(link).to_be_visible(timeout=WAIT_MS)
            snap(page, "performance.png")
            linked_part = link.inner_text().removeprefix("Trace ").strip()
            link.click()
            expect(page.locator('input[aria-label="Part id"]')).to_have_value(linked_part, timeout=WAIT_MS)
            expect(page.get_by_text("disagrees").first).to_be_visible(timeout=WAIT_MS)
            snap(page, "trace-from-disagreement.png")

            # A part id no part can have, in a fresh browser session (log in again): a short message, no
            # traceback, SQL or paths.
            page.goto(f"{url}/trace?part=%00")
            page.get_by_label("User name", exact=True).fill("audrey")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("the part id contains the control character U+0000")).to_be_visible(
                timeout=WAIT_MS)
            body = page.locator('[data-testid="stMain"]').inner_text()
            for leak in ("SELECT", "Traceback", "psycopg", ".py"):
                assert leak not in body, (leak, body)

            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_text("You logged out.")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("signed in as")).to_have_count(0)
        finally:
            browser.close()
