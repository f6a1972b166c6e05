"""The approver inbox in a real headless Chromium (Debian's), driven by Playwright.

An approver signs in with a minted token, reads the pending approval, writes a
comment and clicks Approve; the run resumes and the signed audit log records
the approval (and still verifies). The page must run under its own strict
Content-Security-Policy without a single violation, and fit a 1280 px window.
Then an HTML report of the same log is opened at 1280 px: every table fits its
container (nothing scrolls sideways). Screenshots of both are kept in the
test's temporary directory.

Playwright drives the system Chromium (``executable_path``); it never downloads
a browser. Skipped, with the reason, when Chromium or Playwright is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inbox_process import InboxServer, mint, run_status, start_waiting_run
from tests.test_cli_reporting import CHROMIUM, png_pixels
from tests.test_cli_workflows import audit_rows, pe
from tests.test_html_reports import FLAGS

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                                            "(pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

# Every table's container, and the page itself: how far its content is wider than its box (0 or less: it fits).
OVERFLOW = """() => {
  const out = [];
  const root = document.documentElement;
  out.push(['page', root.scrollWidth - root.clientWidth]);
  document.querySelectorAll('table').forEach((t, i) => {
    const box = t.parentElement;
    out.push(['table ' + i + ' in ' + box.tagName.toLowerCase(), box.scrollWidth - box.clientWidth]);
    out.push(['table ' + i + ' right edge', Math.round(t.getBoundingClientRect().right - root.clientWidth)]);
  });
  return out;
}"""


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _fits(page) -> None:
    wide = [(what, px) for what, px in page.evaluate(OVERFLOW) if px > 0]
    assert wide == [], f"{page.url} scrolls sideways at 1280 px: {wide}"


def test_an_approver_signs_in_and_approves_in_chromium(browser, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    with InboxServer(work) as server:
        page.goto(server.url + "/")
        assert page.url == server.url + "/login"
        page.fill("#token", "pei_not-the-token")
        page.click("button[type=submit]")
        assert "unknown or revoked token" in page.inner_text("[role=alert]")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/")
        card = page.locator(f"#run-{run_id}")
        card.wait_for(state="visible")
        text = card.inner_text()
        assert "finance.invoices.large_payment" in text and "needs approval by role senior_analyst" in text
        assert "approve_payment" in text and "Deadline" in text
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["pe_inbox"]["httpOnly"] and cookies["pe_inbox"]["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # not readable from script
        _fits(page)
        shot = tmp_path / "inbox-1280.png"
        page.screenshot(path=str(shot), full_page=True)
        assert len(set(png_pixels(shot.read_bytes()))) > 20  # text, buttons and cards, not a blank page

        card.locator("textarea[name=note]").fill("approved from the inbox in Chromium")
        card.locator("button.approve").click()
        page.locator(".flash.ok").wait_for(state="visible")
        flash = page.locator(".flash.ok").inner_text()
        assert flash == f"{run_id} approved by alice; run completed, outcome approved"
        assert page.locator(f"#run-{run_id}").count() == 0
        assert "Nothing waits for you." in page.inner_text("main")
        page.screenshot(path=str(tmp_path / "inbox-after-1280.png"), full_page=True)
    context.close()
    expected = "error: Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    assert [c for c in console if c != expected] == []  # the wrong token's 401; no CSP violation, no other error

    shown = run_status(work, run_id)
    assert shown["status"] == "completed" and shown["outcome"] == "approved"
    (approval,) = audit_rows(work / "policyengine.duckdb", "approval")
    assert (approval["run_id"], approval["approver"], approval["outcome"], approval["note"]) == (
        run_id, "alice", "approved", "approved from the inbox in Chromium")
    verified = pe("audit", "verify", "--db", "policyengine.duckdb", "--pubkey", "policyengine.key.pub.pem", cwd=work)
    assert "OK" in verified.stdout

    # issue 17 item 6: the escalations report of that log (approver, note, file and line columns) fits 1280 px
    report = work / "escalations.html"
    pe("report", "escalations", "--format", "html", "-o", str(report), cwd=work)
    assert "approved from the inbox in Chromium" in report.read_text()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(report.as_uri())
    assert page.locator("table").count() >= 1
    _fits(page)
    shot = tmp_path / "escalations-1280.png"
    page.screenshot(path=str(shot), full_page=True)
    assert len(set(png_pixels(shot.read_bytes()))) > 20
    page.close()
