"""Dates at the calendar's edges are one clear error, never an OverflowError traceback.

Table-driven over report parameters, --since/--until of bias and drift, and
--now, on a real audit database made by `policyengine demo`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PE = [sys.executable, "-m", "policyengine"]
BIAS = ["report", "bias", "--model", "classifier_small", "--group", "subject.vendor_region",
        "--positive", "auto_resolved"]
DRIFT = ["report", "drift", "--model", "classifier_small", "--column", "output.confidence"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dates")
    subprocess.run([*PE, "demo", "--limit", "2"], cwd=d, capture_output=True, check=True, timeout=300)
    return d


EDGES = [
    (["report", "budget_spend", "--param", "since=0001-01-01T00:00:00+05:00"], "outside the calendar once converted"),
    (["report", "budget_spend", "--param", "since=9999-12-31T23:59:59-05:00"], "outside the calendar once converted"),
    ([*BIAS, "--until", "0001-01-05"], "the window reaches beyond the calendar"),
    ([*DRIFT, "--until", "0001-01-05"], "the window reaches beyond the calendar"),
    ([*BIAS, "--until", "9999-12-31T23:00:00-05:00"], "outside the calendar once converted"),
    ([*BIAS, "--since", "0001-01-01T00:00:00+01:00"], "outside the calendar once converted"),
    ([*BIAS, "--until", "9999-12-31"], "outside the supported range"),
    (["runs", "list", "--now", "0001-01-01T00:00:00+05:00"], "outside the calendar once converted"),
    (["monitor", "--no-record", "--now", "9999-12-31T23:59:59-01:00"], "outside the calendar once converted"),
    (["monitor", "--no-record", "--now", "0001-01-01"], "outside the supported range"),
]


@pytest.mark.parametrize(("args", "message"), EDGES, ids=[" ".join(a[:3]) + " " + a[-1] for a, _ in EDGES])
def test_calendar_edges_are_one_error_line(work, args, message):
    proc = subprocess.run([*PE, *args], cwd=work, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (1, 2), proc.stdout
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    assert message in proc.stderr
