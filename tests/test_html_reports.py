"""Every HTML report, as people read it: in headless Chromium at 1280 and 1920 px and printed.

The reports are made by the real CLI from a real signed log (a marketing run,
the monitor, a replay) and from CSV files. Each page must say which log it came
from and whether that log verified; every table must fit the window (columns
wrap, nothing hidden off-screen) at 1280 and 1920 px, and on the printable width
of an A4 landscape page under the page's own print CSS. A script injected into
a copy of each page measures the layout in the browser (the shipped pages have
no scripts); screenshots at 1280 px are kept in the test's temp directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from policyengine.resources import data_path
from tests.test_cli_reporting import CHROMIUM, CUR, FAIR, REF, png_pixels
from tests.test_cli_workflows import pe

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
A4_LANDSCAPE_PX = 1032  # 297 mm less two 12 mm margins, at 96 px per inch

# Measures the page: how far anything sticks out of the window (screen), then how far anything sticks out of
# an A4-landscape-wide body once the page's own @media print rules apply (print); writes both into the title.
MEASURE = """<script>
(function () {
  function overflow(width) {
    var right = 0;
    document.querySelectorAll('table, svg, dl, p, h1, h2, .provenance').forEach(function (e) {
      right = Math.max(right, e.getBoundingClientRect().right);
    });
    return Math.round(Math.max(right - width, document.documentElement.scrollWidth - document.documentElement.clientWidth));
  }
  var screen = overflow(document.documentElement.clientWidth);
  var css = '';
  for (var s of document.styleSheets) for (var r of s.cssRules)
    if (r.media && r.media.mediaText === 'print') for (var x of r.cssRules) if (!(x instanceof CSSPageRule)) css += x.cssText;
  var style = document.createElement('style'); style.textContent = css; document.head.appendChild(style);
  document.body.style.width = '%dpx';
  var print = overflow(document.body.getBoundingClientRect().right);
  document.title = 'layout screen=' + screen + ' print=' + print + ' printcss=' + (css.length > 0);
})();
</script>""" % A4_LANDSCAPE_PX


def chromium(tmp: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh profile for every start
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("html")
    pe("run", "marketing-campaign", "--limit", "80", cwd=d)
    pe("monitor", cwd=d)
    rules = d / "candidate"
    shutil.copytree(data_path("rules"), rules)
    policy = rules / "marketing" / "personalization.policy"
    policy.write_text(policy.read_text().replace('allow role personalization_bot to launch tool "marketing/campaigns"',
                                                 'allow role personalization_bot to launch tool "marketing/none"'))
    out = {}
    for name, args in {
        "denials": ["report", "denials", "--format", "html"],
        "decisions_by_rule": ["report", "decisions_by_rule", "--format", "html"],
        "query": ["query", "SELECT seq, event, actor, payload FROM audit_log ORDER BY seq LIMIT 40", "--format", "html"],
        "bias_log": ["report", "bias", "--model", "segmenter", "--group", "subject.age_band", "--positive", "targeted",
                     "--format", "html"],
        "bias_csv": ["report", "bias", "--csv", str(FAIR), "--outcome", "y_pred", "--positive", "1", "--group", "group",
                     "--label", "y_true", "--format", "html"],
        "drift_csv": ["report", "drift", "--reference", str(REF), "--current", str(CUR), "--column", "amount",
                      "--format", "html"],
        "evidence": ["report", "evidence"],
    }.items():
        out[name] = d / f"{name}.html"
        pe(*args, "-o", str(out[name]), cwd=d)
    out["replay"] = d / "replay.html"
    pe("replay", "--rules", str(rules), "--html", str(out["replay"]), cwd=d)
    return out


FROM_LOG = ["denials", "decisions_by_rule", "query", "bias_log", "evidence", "replay"]


@pytest.mark.parametrize("name", FROM_LOG)
def test_a_report_from_the_log_names_it_and_says_it_verified(pages, name):
    html = pages[name].read_text()
    assert "<strong>Source:</strong> audit log <code>policyengine.duckdb</code>" in html
    assert "<strong class='ok'>verified</strong>" in html and "Checkpoint: " in html
    assert "<script" not in html


@pytest.mark.parametrize("name", ["bias_csv", "drift_csv"])
def test_a_report_from_files_says_no_log_was_read(pages, name):
    html = pages[name].read_text()
    assert "<strong>Source:</strong> files" in html and "no audit log was read" in html


@pytest.mark.parametrize("width", [1280, 1920])
@pytest.mark.parametrize("name", FROM_LOG + ["bias_csv", "drift_csv"])
def test_every_column_fits_the_window_and_the_printed_page(pages, name, width, tmp_path):
    probe = tmp_path / f"{name}.html"
    probe.write_text(pages[name].read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(tmp_path, f"--window-size={width},900", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r"<title>layout screen=(-?\d+) print=(-?\d+) printcss=(\w+)</title>", dom)
    assert found, dom[:500]
    screen, printed, has_print_css = int(found[1]), int(found[2]), found[3]
    assert has_print_css == "true"
    assert screen <= 0, f"{name} sticks out {screen} px at {width} px"
    assert printed <= 0, f"{name} sticks out {printed} px on an A4 landscape page"


@pytest.mark.parametrize("name", FROM_LOG + ["bias_csv", "drift_csv"])
def test_screenshot_at_1280_and_pdf(pages, name, tmp_path):
    shot = pages[name].with_suffix(".png")
    chromium(tmp_path, "--window-size=1280,1000", f"--screenshot={shot}", pages[name].as_uri())
    pixels = png_pixels(shot.read_bytes())
    assert len(set(pixels)) > 20  # text, rules and the verification box, not a blank page
    pdf = pages[name].with_suffix(".pdf")
    chromium(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", pages[name].as_uri())
    assert pdf.read_bytes()[:5] == b"%PDF-"
