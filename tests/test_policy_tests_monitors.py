"""Monitor cases: bias and drift rules judged by the monitor's own SQL on sample data in a test file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine.reporting.bias import bias_from_csv
from policyengine.testing.cases import TestFileError, parse_test_file
from policyengine.testing.coverage import CoverageCollector
from policyengine.testing.junit import junit_xml
from policyengine.testing.output import render_report
from policyengine.testing.runner import run_paths
from tests.test_policy_tests import JUNIT_XSD

POLICY = """\
package shop
role clerk
model scorer
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
rule clerks_read
    allow role clerk to read dataset "orders/*"
bias approval_parity
    for model scorer
    metric disparate_impact of outcome == "approved" by subject.region
    threshold >= 0.8
    window 10 days
    min samples 10
    on breach escalate to role clerk
drift score_shift
    for model scorer
    metric ks of output.score
    baseline previous 7 days
    threshold < 0.5
    on breach block
"""

REQUEST_CASE = """\
cases:
  - name: clerk reads
    principal: {id: cy, roles: [clerk]}
    action: read
    resource: dataset orders/1
    expect: allow
"""

FAIR = """\
  - name: fair
    rule: shop.approval_parity
    rows:
      - {group: north, outcome: approved, count: 8}
      - {group: north, outcome: declined, count: 2}
      - {group: south, outcome: approved, count: 10}
    expect: {breach: false, value: 0.8, action: escalate}
"""


def project(tmp_path: Path, monitors: str, *, cases: str = REQUEST_CASE, extra: dict[str, str] | None = None) -> Path:
    (tmp_path / "shop.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "shop_test.yaml").write_text(cases + "monitors:\n" + textwrap.dedent(monitors), encoding="utf-8")
    for name, text in (extra or {}).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / "shop_test.yaml"


# --- cases that pass or fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "mismatch"),
    [
        (FAIR, None),
        # exactly on the four-fifths line: 0.64 / 0.8 is 0.7999999999999999 in floating point, not a breach
        (FAIR.replace("count: 8}", "count: 16}").replace("count: 2}", "count: 9}")
             .replace("count: 10}", "count: 20}\n      - {group: south, outcome: declined, count: 5}"), None),
        (FAIR.replace("breach: false", "breach: true"), "breach: expected true, got false (disparate_impact 0.8"),
        (FAIR.replace("value: 0.8", "value: 0.75"), "value: expected 0.75 ± 1e-09, got 0.8"),
        (FAIR.replace("value: 0.8", "value: 0.75, tolerance: 0.1"), None),
        (FAIR.replace("action: escalate", "action: block"), "action: expected block, got escalate"),
        # one call short of min samples: north is not judged, and south alone is compared with nothing
        (FAIR.replace("count: 2}", "count: 1}"), "the monitor could not evaluate shop.approval_parity: 1 group(s) judged"),
        # calls 11 days old are outside the 10-day window: north alone is left
        (FAIR.replace("count: 10}", "count: 10, ago: 11 days}"), "the monitor could not evaluate shop.approval_parity: 1 group(s) judged"),
        (FAIR.replace("count: 10}", "count: 10, ago: 239 hours}"), None),
        # another model's calls do not count
        (FAIR.replace("count: 10}", "count: 10, model: other}"), "the monitor could not evaluate shop.approval_parity: 1 group(s) judged"),
        (FAIR.replace("outcome:", "model: other, outcome:"),
         "the monitor could not evaluate shop.approval_parity: no model_call decisions of model 'scorer'"),
        ("""\
  - name: drift at exactly 0.5 is a breach
    rule: shop.score_shift
    reference: [1, 1, 2, 2]
    current: [2, 2, 2, 2]
    expect: {breach: true, value: 0.5, action: block}
""", None),
        ("""\
  - name: times place the rows in the two periods
    rule: shop.score_shift
    rows:
      - {value: 1, ago: 1 day}
      - {value: 5, ago: 8 days}
    expect: {breach: true, value: 1}
""", None),
        ("""\
  - name: a reference older than the baseline is no reference
    rule: shop.score_shift
    rows:
      - {value: 1, ago: 1 day}
      - {value: 5, ago: 15 days}
    expect: {error: reference sample has no values}
""", None),
        ("""\
  - name: an error that does not happen
    rule: shop.score_shift
    reference: [1]
    current: [1]
    expect: {error: no values}
""", "error: expected one containing 'no values', but the rule was evaluated (ks 0)"),
    ],
)
def test_monitor_cases_are_judged_by_the_monitor(tmp_path: Path, monitor: str, mismatch: str | None) -> None:
    report = run_paths([project(tmp_path, monitor)])
    assert not report.errors, report.errors
    result = report.results[-1]
    if mismatch is None:
        assert result.passed, result.mismatches
    else:
        assert not result.passed
        assert any(m.startswith(mismatch) for m in result.mismatches), result.mismatches


def test_the_value_is_the_offline_reports_value(tmp_path: Path) -> None:
    """The same rows as a CSV through ``report bias`` give the number the monitor case saw."""
    rows = "group,outcome,count\nnorth,approved,7\nnorth,declined,3\nsouth,approved,9\nsouth,declined,1\n"
    test = project(tmp_path, """\
  - name: from a csv
    rule: shop.approval_parity
    data: sample.csv
    expect: {breach: true}
""", extra={"sample.csv": rows})
    report = run_paths([test])
    assert report.ok, render_report(report)
    expanded = tmp_path / "expanded.csv"
    expanded.write_text("region,outcome\n" + "north,approved\n" * 7 + "north,declined\n" * 3 + "south,approved\n" * 9
                        + "south,declined\n" * 1, encoding="utf-8")
    offline = bias_from_csv(expanded, outcome="outcome", positive="approved", group="region", min_samples=10)
    assert report.results[-1].result.value == pytest.approx(offline.disparate_impact, abs=1e-12)
    assert report.results[-1].result.value == pytest.approx(0.7 / 0.9)


# --- bad test files: file:line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "extra", "where", "message"),
    [
        (FAIR.replace("expect:", "expct:"), {}, "shop_test.yaml:14", "unknown field 'expct' in a monitor case"),
        (FAIR.replace("breach: false", "breach: maybe"), {}, "shop_test.yaml:14", "'breach' must be true or false"),
        (FAIR.replace("rule: shop.approval_parity", "rule: shop.approval_parityy"), {}, "shop_test.yaml:9",
         "'shop.approval_parityy' is not a bias or drift rule (did you mean 'shop.approval_parity'?)"),
        (FAIR.replace("rule: shop.approval_parity", "rule: shop.clerks_read"), {}, "shop_test.yaml:9",
         "'shop.clerks_read' is not a bias or drift rule"),
        (FAIR.replace("{group: south, ", "{"), {}, "shop_test.yaml:13", "a bias row needs a 'group'"),
        (FAIR.replace("count: 8", "count: 0"), {}, "shop_test.yaml:11", "'count' must be a whole number from 1 to 1,000,000, got 0"),
        (FAIR.replace("count: 8", "count: 8, ago: soon"), {}, "shop_test.yaml:11", "'ago' must be a length of time"),
        (FAIR.replace("count: 8", "count: 8, value: 3"), {}, "shop_test.yaml:11", "'value' is for drift rules"),
        (FAIR.replace("action: escalate", "action: shout"), {}, "shop_test.yaml:14", "unknown action 'shout'"),
        (FAIR.replace("    rows:\n      - {group: north, outcome: approved, count: 8}\n"
                      "      - {group: north, outcome: declined, count: 2}\n"
                      "      - {group: south, outcome: approved, count: 10}\n", ""),
         {}, "shop_test.yaml:8", "monitor case 'fair' has no sample data"),
        ("  - name: d\n    rule: shop.score_shift\n    rows: [{value: 1}]\n    expect: {breach: false}\n", {},
         "shop_test.yaml:10", "a drift row needs a 'side' (reference or current) or a time"),
        ("  - name: d\n    rule: shop.score_shift\n    data: s.csv\n    expect: {breach: false}\n",
         {"s.csv": "value,side,weight\n1,reference,2\n"}, "s.csv:1", "unknown column 'weight'"),
        ("  - name: d\n    rule: shop.score_shift\n    data: s.csv\n    expect: {breach: false}\n",
         {"s.csv": "value,side\n1,reference\n2,sideways\n"}, "s.csv:3", "'side' must be 'reference' or 'current'"),
        ("  - name: d\n    rule: shop.score_shift\n    data: s.csv\n    expect: {breach: false}\n",
         {"s.csv": "value,side\n1,reference\n2\n"}, "s.csv:3", "expected 2 fields (value, side), got 1"),
        ("  - name: d\n    rule: shop.score_shift\n    data: missing.csv\n    expect: {breach: false}\n", {},
         "shop_test.yaml:10", "sample data file 'missing.csv' does not exist"),
        (FAIR + FAIR, {}, "shop_test.yaml:15", "duplicate case name 'fair'"),
        (FAIR.replace("count: 8", "count: 10_000_000"), {}, "shop_test.yaml:11", "from 1 to 1,000,000"),
        (FAIR.replace("group: south", "group: .nan"), {}, "shop_test.yaml:13", "'group' must be a number or a word"),
        (FAIR.replace("value: 0.8", "value: .nan"), {}, "shop_test.yaml:14", "'value' must be a finite number"),
        # an infinite tolerance accepts every value: the case checked nothing of it
        (FAIR.replace("value: 0.8", "value: 0.1, tolerance: .inf"), {}, "shop_test.yaml:14",
         "'tolerance' must be a finite number, 0 or more"),
        (FAIR.replace("count: 8", "count: 8, ago: 999999999 weeks"), {}, "shop_test.yaml:8",
         "monitor case 'fair': cannot load the sample rows"),
        ("  - name: d\n    rule: shop.score_shift\n    data: s.csv\n    expect: {breach: false}\n",
         {"s.csv": "value,side\n1,reference\ninf,current\n"}, "s.csv:3", "'value' must be a finite number"),
    ],
)
def test_bad_monitor_cases_name_file_and_line(tmp_path: Path, monitor: str, extra: dict[str, str], where: str,
                                              message: str) -> None:
    report = run_paths([project(tmp_path, monitor, extra=extra)])
    assert len(report.errors) == 1, report.results
    error = report.errors[0]
    assert f"{Path(error.file).name}:{error.line}" == where, str(error)
    assert message in error.message, error.message


# --- coverage, JUnit and the command ---------------------------------------------------------------


def test_bias_and_drift_rules_count_in_coverage(tmp_path: Path) -> None:
    test = project(tmp_path, FAIR)
    collector = CoverageCollector()
    run_paths([test], observer=collector)
    cov = collector.report([str(tmp_path / "shop.policy")])
    kinds = {d.id: (d.kind, hit) for d, hit in cov.decls}
    assert kinds == {"shop.clerks_read": ("rule", True), "shop.approval_parity": ("bias", True),
                     "shop.score_shift": ("drift", False)}
    assert [d.id for d in cov.missed_decls] == ["shop.score_shift"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("policyengine")
    env = {**os.environ, "POLICYENGINE_NO_CACHE": "1", "COLUMNS": "80"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_the_command_reports_monitor_cases_in_summary_junit_and_coverage(tmp_path: Path) -> None:
    failing = FAIR.replace("name: fair", "name: wrongly expects a breach").replace("breach: false", "breach: true")
    project(tmp_path, FAIR + failing)
    result = run_cli("test", "--junit", "report.xml", "--coverage", ".", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert out.splitlines()[-1] == "2 passed, 1 failed"
    assert "3 case(s) (2 of bias/drift monitors)" in out.splitlines()[0]
    assert "shop_test.yaml:15: breach: expected true, got false (disparate_impact 0.8, healthy when >= 0.8)" in out
    assert "group north: n=10 selection rate 0.8, judged" in out
    assert "declarations: 2/3 exercised" in out
    assert "shop.policy:15: drift shop.score_shift not exercised by any test" in out
    suites = ET.parse(tmp_path / "report.xml").getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("3", "1", "0")
    failure = suites.find(".//testcase[@name='wrongly expects a breach']/failure")
    assert failure is not None and "sample:" in failure.text and "explanation:" in failure.text
    selected = run_cli("test", "-k", "fair", ".", cwd=tmp_path)
    assert selected.returncode == 0 and selected.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_a_file_of_monitor_cases_only(tmp_path: Path) -> None:
    test = project(tmp_path, FAIR, cases="")
    report = run_paths([test])
    assert report.ok and report.passed == 1
    xml = junit_xml(report)
    assert "<testcase name=\"fair\"" in xml
    xmlschema.XMLSchema(JUNIT_XSD).validate(xml)


def test_pytest_collects_monitor_cases(tmp_path: Path) -> None:
    project(tmp_path, FAIR)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "shop_test.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout
    assert "2 passed" in result.stdout


# --- no input makes the loader fail with anything but file:line -------------------------------------

_MONITOR_BITS = st.sampled_from([
    "monitors:", "  - name: m", "    rule: shop.approval_parity", "    rule: [1]", "    rows:", "    rows: 3",
    "      - {group: a, outcome: approved}", "      - {group: [1], outcome: {x: 1}}", "      - {count: -1}",
    "      - {count: x, ago: 3 parsecs}", "      - {at: yesterday}", "      - {value: .inf, side: up}",
    "      - 7", "    reference: [1, 2]", "    current: {a: 1}", "    data: nope.csv", "    data: [1]",
    "    expect: {breach: true}", "    expect: {breach: 1, value: x}", "    expect: {tolerance: -1}",
    "    expect: {error: ''}", "    expect: [1]", "    now: never", "cases: []", "{", "]", "\t", "'",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(_MONITOR_BITS, max_size=12))
def test_any_monitor_section_parses_or_raises_test_file_error(tmp_path_factory: pytest.TempPathFactory,
                                                               lines: list[str]) -> None:
    base = tmp_path_factory.getbasetemp()
    (base / "p.policy").write_text("package p\n", encoding="utf-8")
    try:
        parse_test_file("\n".join(lines) + "\n", "t_test.yaml", base=base)
    except TestFileError as exc:
        assert str(exc).startswith("t_test.yaml:") and exc.span.line >= 1
