"""Drift metrics: PSI by the documented convention, KS and chi-squared as scipy.

Truth comes from the oracle files in tests/oracles/drift (numpy/scipy
values on data we did not generate) and from scipy itself on data generated here.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policyengine.reporting import ReportError, drift_from_csv
from policyengine.reporting.stats import chi2_sf

scipy_stats = pytest.importorskip("scipy.stats")
np = pytest.importorskip("numpy")

ORACLES = Path(__file__).resolve().parent / "oracles" / "drift"
TOL = 1e-9
sys.path.insert(0, str(Path(__file__).parent))  # test_reports: the audit-log fixture


def _oracle() -> dict:
    return json.loads((ORACLES / "expected_drift.json").read_text())


def _write(path: Path, column: str, values: list[object]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", column])
        w.writerows([i, v] for i, v in enumerate(values))
    return path


def _reference_psi(ref: list[float], cur: list[float], categorical: bool) -> float:
    """The convention written out with numpy, independently of our SQL."""
    if categorical:
        cats = sorted(set(ref) | set(cur))
        rc = np.array([ref.count(c) for c in cats], dtype=float)
        cc = np.array([cur.count(c) for c in cats], dtype=float)
    else:
        edges = np.quantile(np.array(ref), np.arange(1, 10) / 10, method="linear")
        rc = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10).astype(float)
        cc = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=10).astype(float)
    rp, cp = rc / len(ref), cc / len(cur)
    rp[rp == 0], cp[cp == 0] = 1e-4, 1e-4
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def _chi2(ref: list[str], cur: list[str]):
    cats = sorted(set(ref) | set(cur))
    return scipy_stats.chi2_contingency([[ref.count(c) for c in cats], [cur.count(c) for c in cats]])


# --- the oracle ---------------------------------------------------------------------


@pytest.mark.parametrize("column", ["amount", "risk_score", "channel", "region"])
def test_oracle_psi_per_bin_and_total(column):
    want = _oracle()["columns"][column]
    r = drift_from_csv(ORACLES / "reference.csv", ORACLES / "current.csv", column)
    assert r.kind == ("numeric" if want["type"] == "numerical" else "categorical")
    assert abs(r.psi - want["psi"]["psi"]) <= TOL
    assert len(r.bins) == len(want["psi"]["bins"])
    for got, w in zip(r.bins, want["psi"]["bins"]):
        assert got.bin == w["bin"]
        assert (got.ref_count, got.cur_count) == (w["ref_count"], w["cur_count"])
        assert abs(got.ref_pct_eps - w["ref_pct_eps"]) <= TOL
        assert abs(got.cur_pct_eps - w["cur_pct_eps"]) <= TOL
        assert abs(got.psi_term - w["psi_term"]) <= TOL


@pytest.mark.parametrize("column", ["amount", "risk_score"])
def test_oracle_bin_edges_are_reference_deciles(column):
    edges = _oracle()["columns"][column]["psi"]["interior_edges"]
    r = drift_from_csv(ORACLES / "reference.csv", ORACLES / "current.csv", column)
    got = [b.upper_edge for b in r.bins[:-1]]
    assert all(abs(g - w) <= TOL for g, w in zip(got, edges))
    assert [b.lower_edge for b in r.bins[1:]] == got


@pytest.mark.parametrize("column", ["amount", "risk_score"])
def test_oracle_ks_statistic_location_and_sign(column):
    want = _oracle()["columns"][column]["ks_2samp"]["auto"]
    r = drift_from_csv(ORACLES / "reference.csv", ORACLES / "current.csv", column)
    assert abs(r.ks.statistic - want["statistic"]) <= TOL
    assert r.ks.location == want["statistic_location"]
    assert r.ks.sign == want["statistic_sign"]
    assert r.chi2 is None


@pytest.mark.parametrize("column", ["channel", "region"])
def test_oracle_chi2_equals_scipy_contingency(column):
    ref = [row[column] for row in csv.DictReader((ORACLES / "reference.csv").open())]
    cur = [row[column] for row in csv.DictReader((ORACLES / "current.csv").open())]
    want = _chi2(ref, cur)
    r = drift_from_csv(ORACLES / "reference.csv", ORACLES / "current.csv", column)
    assert abs(r.chi2.statistic - want.statistic) <= TOL * max(1.0, want.statistic)
    assert r.chi2.dof == want.dof
    assert math.isclose(r.chi2.pvalue, want.pvalue, rel_tol=1e-9, abs_tol=1e-300)
    assert r.ks is None


# --- scipy on generated data ------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ref=st.integers(1, 300),
    n_cur=st.integers(1, 300),
    shift=st.floats(-2, 2),
    ties=st.booleans(),
)
@example(seed=70, n_ref=68, n_cur=68, shift=-2.0, ties=True)  # KS reached at several values: scipy's pick
def test_numeric_psi_and_ks_equal_numpy_and_scipy(seed, n_ref, n_cur, shift, ties):
    rnd = random.Random(seed)
    draw = (lambda m: round(rnd.gauss(m, 1), 1)) if ties else (lambda m: rnd.gauss(m, 1))
    ref = [draw(0.0) for _ in range(n_ref)]
    cur = [draw(shift) for _ in range(n_cur)]
    with tempfile.TemporaryDirectory() as tmp:
        r = drift_from_csv(_write(Path(tmp) / "r.csv", "x", [repr(v) for v in ref]),
                           _write(Path(tmp) / "c.csv", "x", [repr(v) for v in cur]), "x")
    assert abs(r.psi - _reference_psi(ref, cur, False)) <= TOL
    want = scipy_stats.ks_2samp(ref, cur)
    assert abs(r.ks.statistic - want.statistic) <= TOL
    assert r.ks.location == want.statistic_location and r.ks.sign == want.statistic_sign


@settings(max_examples=15, deadline=None)
@given(
    ref=st.lists(st.sampled_from(["api", "email", "phone", "portal", "fax"]), min_size=1, max_size=200),
    cur=st.lists(st.sampled_from(["api", "email", "phone", "chat"]), min_size=1, max_size=200),
)
def test_categorical_psi_and_chi2_equal_numpy_and_scipy(ref, cur):
    with tempfile.TemporaryDirectory() as tmp:
        r = drift_from_csv(_write(Path(tmp) / "r.csv", "channel", ref),
                           _write(Path(tmp) / "c.csv", "channel", cur), "channel")
    assert r.kind == "categorical"
    assert abs(r.psi - _reference_psi(ref, cur, True)) <= TOL
    want = _chi2(ref, cur)  # includes Yates' correction when there are two categories
    assert abs(r.chi2.statistic - want.statistic) <= TOL * max(1.0, want.statistic)
    assert r.chi2.dof == want.dof
    assert math.isclose(r.chi2.pvalue, want.pvalue, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 30, 200])
@pytest.mark.parametrize("x", [0.0, 1e-9, 0.5, 1.0, 3.84, 10.0, 50.0, 400.0])
def test_chi2_pvalue_equals_scipy(dof, x):
    assert math.isclose(chi2_sf(x, dof), scipy_stats.chi2.sf(x, dof), rel_tol=1e-9, abs_tol=1e-300)


def test_one_category_has_no_degrees_of_freedom(tmp_path):
    r = drift_from_csv(_write(tmp_path / "r.csv", "c", ["a"] * 5), _write(tmp_path / "c.csv", "c", ["a"] * 3), "c")
    assert (r.chi2.statistic, r.chi2.dof, r.chi2.pvalue) == (0.0, 0, 1.0)
    assert r.psi == 0.0


def test_constant_reference_puts_everything_in_the_top_bin(tmp_path):
    r = drift_from_csv(_write(tmp_path / "r.csv", "x", [5] * 10), _write(tmp_path / "c.csv", "x", [4, 5, 6]), "x")
    assert [b.ref_count for b in r.bins] == [0] * 9 + [10]
    assert [b.cur_count for b in r.bins] == [1] + [0] * 8 + [2]
    assert abs(r.psi - _reference_psi([5.0] * 10, [4.0, 5.0, 6.0], False)) <= TOL


def test_empty_cells_are_left_out(tmp_path):
    r = drift_from_csv(_write(tmp_path / "r.csv", "x", [1, "", 2, 3]), _write(tmp_path / "c.csv", "x", [1, 2, ""]), "x")
    assert (r.n_reference, r.n_current) == (3, 2)


def test_categorical_flag_compares_numbers_as_categories(tmp_path):
    r = drift_from_csv(_write(tmp_path / "r.csv", "zip", ["01000", "02000", "N/A"]),
                       _write(tmp_path / "c.csv", "zip", ["01000", "01000"]), "zip", kind="categorical")
    assert r.kind == "categorical" and [b.bin for b in r.bins] == ["01000", "02000", "N/A"]


# --- CSV cells that read as numbers but are not written as one ------------------------------------------------

CSV_NUMBERS = [0.5, 1, 2, 3, 4, 5, 6, 7.25, 8, 9, 10, -1.5, 1e3]
CSV_CURRENT = [1, 2, 2, 3, 5, 8, 13, -2.5, 2.5e2]
CSV_LEFT_OUT = "were left out: numeric drift counts plain decimal numbers only"

# (case, reference numbers, reference cells left out, current numbers, current cells left out, the note). Python's
# float() and DuckDB's cast read every cell left out as a number; each number is also written in the CSV as it is
# here, and +1, .5, 1., 007, 1E3 and -0 are plain decimal notation with one reading in every CSV reader: leaving
# them out would drop values by sign or size (.5 only below 1), so they count (docs/reports.md).
CSV_NOT_NUMBERS = [
    ("nan in the current file", CSV_NUMBERS, [], CSV_CURRENT, ["nan", "NaN", "nan"],
     f'0 reference and 3 current cell(s) not written as a plain decimal number ("nan", "NaN") {CSV_LEFT_OUT}'),
    ("infinities in the current file", CSV_NUMBERS, [], CSV_CURRENT, ["inf", "-inf", "Infinity"],
     f'0 reference and 3 current cell(s) not written as a plain decimal number ("-inf", "Infinity", "inf") '
     f"{CSV_LEFT_OUT}"),
    ("spaces and an underscore in the current file", CSV_NUMBERS, [], CSV_CURRENT, [" 1", "2 ", "1_000"],
     f'0 reference and 3 current cell(s) not written as a plain decimal number (" 1", "1_000", "2 ") '
     f"{CSV_LEFT_OUT}"),
    ("the same in the reference file", CSV_NUMBERS, ["nan", "-inf", " 1", "1_000"], CSV_CURRENT, [],
     f'4 reference and 0 current cell(s) not written as a plain decimal number (" 1", "-inf", "1_000", ...) '
     f"{CSV_LEFT_OUT}"),
    ("both files, and a number too large to be one (1e999 reads as inf)", CSV_NUMBERS, ["Infinity"],
     CSV_CURRENT, ["1e999", "nan"],
     f'1 reference and 2 current cell(s) not written as a plain decimal number ("1e999", "Infinity", "nan") '
     f"{CSV_LEFT_OUT}"),
    ("plain decimal notation counts, nan beside it does not", CSV_NUMBERS, [],
     ["+1", ".5", "1.", "007", "1E3", "-0", "2.5e-1", *CSV_CURRENT], ["nan"],
     f'0 reference and 1 current cell(s) not written as a plain decimal number ("nan") {CSV_LEFT_OUT}'),
]


@pytest.mark.parametrize(("ref", "ref_out", "cur", "cur_out", "note"), [c[1:] for c in CSV_NOT_NUMBERS],
                         ids=[c[0] for c in CSV_NOT_NUMBERS])
def test_csv_cells_not_written_as_numbers_are_left_out_with_a_note(tmp_path, ref, ref_out, cur, cur_out, note):
    """nan or " 1" reads as a number but is not written as one: PSI and KS count the numbers alone, and say so."""
    r = drift_from_csv(_write(tmp_path / "r.csv", "x", [*ref_out, *ref]),
                       _write(tmp_path / "c.csv", "x", [*cur, *cur_out]), "x")
    ref_numbers, cur_numbers = [float(v) for v in ref], [float(v) for v in cur]
    assert r.kind == "numeric" and (r.n_reference, r.n_current) == (len(ref_numbers), len(cur_numbers))
    assert sum(b.ref_count for b in r.bins) == len(ref_numbers) and sum(b.cur_count for b in r.bins) == len(cur_numbers)
    assert abs(r.psi - _reference_psi(ref_numbers, cur_numbers, False)) <= TOL
    want = scipy_stats.ks_2samp(ref_numbers, cur_numbers)
    assert abs(r.ks.statistic - want.statistic) <= TOL and r.ks.location == want.statistic_location
    assert [n for n in r.notes if "plain decimal" in n] == [note]


# (case, reference cells, current cells, the refusal with {r} and {c} for the two files)
CSV_NO_NUMBER_LEFT = [
    ("the current file holds no number", CSV_NUMBERS, ["nan", "inf", " 1", "nan"],
     "column 'x' has no plain decimal number in the current file {c} (0 reference and 4 current cell(s) not "
     'written as a plain decimal number ("nan", " 1", "inf")): numeric drift counts plain decimal numbers only, so '
     "drift is not computed (--categorical compares the values as categories)"),
    ("neither file holds a number", ["Infinity", "NaN"], ["1_000", "-inf", "Infinity", "1e999"],
     "column 'x' has no plain decimal number in the reference file {r} or current file {c} (2 reference and 4 "
     'current cell(s) not written as a plain decimal number ("Infinity", "-inf", "1_000", ...)): numeric drift '
     "counts plain decimal numbers only, so drift is not computed (--categorical compares the values as categories)"),
]


@pytest.mark.parametrize(("ref", "cur", "refusal"), [c[1:] for c in CSV_NO_NUMBER_LEFT],
                         ids=[c[0] for c in CSV_NO_NUMBER_LEFT])
def test_a_csv_file_with_no_number_left_is_refused_naming_its_cells(tmp_path, ref, cur, refusal):
    """Left out, the cells would leave a file empty, read as "no values" (before, they were numbers): refused;
    --categorical compares them as text, where nan is a category like any other."""
    r_csv, c_csv = _write(tmp_path / "r.csv", "x", ref), _write(tmp_path / "c.csv", "x", cur)
    with pytest.raises(ReportError) as e:
        drift_from_csv(r_csv, c_csv, "x")
    assert str(e.value) == refusal.format(r=r_csv, c=c_csv)
    as_text = drift_from_csv(r_csv, c_csv, "x", kind="categorical")  # the way out it names: each cell is its text
    assert {b.bin for b in as_text.bins} == {str(v).strip() for v in (*ref, *cur)}
    assert (as_text.n_reference, as_text.n_current) == (len(ref), len(cur))
    assert not [n for n in as_text.notes if "plain decimal" in n]


# --- bad input: one clear line -------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, cur, column, kind, message",
    [
        ([1, 2, "abc", 4], [1, 2], "x", "auto", "r.csv:4: column 'x' mixes numbers and text (first text value 'abc')"),
        ([1, 2], ["a", "b"], "x", "auto", "column 'x' is numeric in"),
        (["a", "b"], [1], "x", "numeric", "r.csv:2: column 'x' is not numeric: 'a'"),
        ([1, 2], [1, 2], "nope", "auto", "r.csv: no column 'nope' for --column"),
        (["", ""], [1], "x", "auto", "r.csv: column 'x' has no values"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, ref, cur, column, kind, message):
    with pytest.raises(ReportError) as e:
        drift_from_csv(_write(tmp_path / "r.csv", "x", ref), _write(tmp_path / "c.csv", "x", cur), column, kind=kind)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_a_csv_is_one_clear_line(tmp_path):
    bad = tmp_path / "r.csv"
    bad.write_bytes(b"\x00\x01\x02 binary \xff\xfe")
    with pytest.raises(ReportError) as e:
        drift_from_csv(bad, bad, "x")
    assert "\n" not in str(e.value) and "r.csv" in str(e.value)


# --- the same SQL over the audit log ------------------------------------------------------------


@pytest.mark.parametrize("column, metric", [("amount", "psi"), ("risk_score", "ks"), ("region", "chi2")])
def test_audit_log_windows_give_the_oracle_numbers(tmp_path, column, metric):
    """Reference rows in October, current rows in November: same numbers as the CSVs."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import drift_from_audit
    from policyengine.reporting.db import open_readonly

    oct1, nov1, dec1 = datetime(2026, 10, 1), datetime(2026, 11, 1), datetime(2026, 12, 1)
    story = []
    for start, name in ((oct1, "reference.csv"), (nov1, "current.csv")):
        for i, row in enumerate(csv.DictReader((ORACLES / name).open())):
            value = row[column] if column == "region" else float(row[column])
            story.append((start + timedelta(seconds=i), "model_call", "a", None, None,
                          {"model": "m", "output": {column: value}}, "h"))
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    r = drift_from_audit(con, model="m", path=f"output.{column}", start=oct1, split=nov1, end=dec1, metric=metric,
                         period="day")
    con.close()
    # every current row falls on Nov 1: PSI over time has one point, the overall PSI
    assert [(str(p.period)[:10], p.n_current) for p in r.over_time] == [("2026-11-01", 3000)]
    assert abs(r.over_time[0].psi - r.psi) <= TOL
    want = _oracle()["columns"][column]
    assert (r.n_reference, r.n_current) == (5000, 3000)
    assert abs(r.psi - want["psi"]["psi"]) <= TOL
    if metric == "ks":
        assert abs(r.ks.statistic - want["ks_2samp"]["auto"]["statistic"]) <= TOL
    if metric == "chi2":
        offline = drift_from_csv(ORACLES / "reference.csv", ORACLES / "current.csv", column)
        assert r.chi2 == offline.chi2


def test_psi_over_time_per_period(tmp_path):
    """Each period's PSI is the PSI of that period's rows alone against the reference."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import drift_from_audit
    from policyengine.reporting.db import open_readonly

    rnd = random.Random(3)
    oct1, nov1 = datetime(2026, 10, 1), datetime(2026, 11, 1)
    ref = [rnd.gauss(0, 1) for _ in range(400)]
    weeks = [[rnd.gauss(shift, 1) for _ in range(150)] for shift in (0.0, 0.5, 1.5)]
    story = [(oct1 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"x": v}}, "h")
             for i, v in enumerate(ref)]
    for w, values in enumerate(weeks):  # Nov 2, 9 and 16 2026 are Mondays
        start = datetime(2026, 11, 2) + timedelta(weeks=w)
        story += [(start + timedelta(minutes=i), "model_call", "a", None, None, {"model": "m", "output": {"x": v}}, "h")
                  for i, v in enumerate(values)]
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    r = drift_from_audit(con, model="m", path="output.x", start=oct1, split=nov1, end=datetime(2026, 12, 1),
                         period="week")
    con.close()
    assert [p.n_current for p in r.over_time] == [150, 150, 150]
    for point, values in zip(r.over_time, weeks):
        assert abs(point.psi - _reference_psi(ref, values, False)) <= TOL
    assert r.over_time[0].psi < r.over_time[1].psi < r.over_time[2].psi


def test_audit_values_mixing_numbers_and_text_are_compared_as_categories(tmp_path):
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import drift_from_audit
    from policyengine.reporting.db import open_readonly

    oct1, nov1 = datetime(2026, 10, 1), datetime(2026, 11, 1)
    ref, cur = ["1", "2", "high", "2"], ["high", "high", "1"]
    story = [(t0 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"risk": v}}, "h")
             for t0, values in ((oct1, ref), (nov1, cur)) for i, v in enumerate(values)]
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    r = drift_from_audit(con, model="m", path="output.risk", start=oct1, split=nov1, end=datetime(2026, 12, 1))
    con.close()
    assert r.kind == "categorical" and [b.bin for b in r.bins] == ["1", "2", "high"]
    assert abs(r.psi - _reference_psi(ref, cur, True)) <= TOL


@pytest.mark.parametrize("use_facts", [True, False], ids=["from facts", "from payloads"])
def test_calls_without_a_value_are_counted_in_a_note_not_silently_dropped(tmp_path, use_facts):
    """A value that stops being written (null, "", absent) is drift too: the report says how many calls had none."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import drift_from_audit
    from policyengine.reporting.db import open_readonly

    oct1, nov1 = datetime(2026, 10, 1), datetime(2026, 11, 1)
    ref = [0.1, 0.2, 0.3, 0.4]
    cur = [0.1, 0.2, None, "", "absent"]
    story = [(t0 + timedelta(hours=i), "model_call", "a", None, None,
              {"model": "m", "output": {} if v == "absent" else {"x": v}}, "h")
             for t0, values in ((oct1, ref), (nov1, cur)) for i, v in enumerate(values)]
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    r = drift_from_audit(con, model="m", path="output.x", start=oct1, split=nov1, end=datetime(2026, 12, 1),
                         use_facts=use_facts)
    con.close()
    assert (r.n_reference, r.n_current) == (4, 2)
    assert r.notes[-1] == "0 reference and 3 current call(s) without a value at output.x were left out"


# --- a value's JSON type is part of it (1 and "1" print alike, and audit_facts keeps both as 1) -----------------

# (case, reference values, current values, metric, kind, the note or None)
JSON_TYPES_ACROSS_WINDOWS = [
    ('1 then "1"', [1] * 6 + [2] * 2, ["1"] * 6 + [2] * 2, "chi2", "categorical",
     'value 1 at output.v is a number in some calls and a string in others: counted as two categories, 1 and "1"'),
    ('true then "true"', [True] * 6 + [False] * 2, ["true"] * 6 + [False] * 2, "chi2", "categorical",
     'value true at output.v is a boolean in some calls and a string in others: counted as two categories, true and '
     '"true"'),
    ('1 then "1" among text (PSI over categories)', [1] * 6 + ["high"] * 2, ["1"] * 6 + ["high"] * 2, "psi",
     "categorical",
     'value 1 at output.v is a number in some calls and a string in others: counted as two categories, 1 and "1"'),
    ("plain strings (chi2)", ["EU"] * 5 + ["US"] * 3, ["EU"] * 3 + ["US"] * 4 + ["1x"], "chi2", "categorical", None),
    ("plain strings (PSI)", ["EU"] * 5 + ["US"] * 3, ["EU"] * 3 + ["US"] * 5, "psi", "categorical", None),
    ("numbers only", [0.5, 1, 2, 3, 4, 5, 6, 7.25, 8, 9, 10], [1, 1, 2, 3, 5, 8, 13, 21], "psi", "numeric", None),
]


def _shown(v: object) -> str:
    """A category's name in these cases: a number or boolean as JSON prints it, and so a string that prints alike."""
    return v if isinstance(v, str) and v not in ("1", "true") else json.dumps(v)


@pytest.mark.parametrize(("ref", "cur", "metric", "kind", "note"), [c[1:] for c in JSON_TYPES_ACROSS_WINDOWS],
                         ids=[c[0] for c in JSON_TYPES_ACROSS_WINDOWS])
def test_values_of_two_json_types_that_print_alike_are_two_categories_from_facts_and_from_payloads(
        tmp_path, ref, cur, metric, kind, note):
    """1 in the reference window and "1" in the current one is drift: the producer changed the value's type."""
    from datetime import datetime, timedelta

    import duckdb
    from test_reports import write_audit_db

    from policyengine.audit.facts import FactsWriter
    from policyengine.reporting.audit_source import _facts_columns, drift_from_audit, json_path
    from policyengine.reporting.db import open_readonly

    oct1, nov1 = datetime(2026, 10, 1), datetime(2026, 11, 1)
    story = [(t0 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"v": v}}, "h")
             for t0, values in ((oct1, ref), (nov1, cur)) for i, v in enumerate(values)]
    db = write_audit_db(tmp_path / "a.duckdb", story)
    con = duckdb.connect(str(db))
    FactsWriter(con)  # the facts a signed log keeps (VARCHAR: 1 and "1" both as 1)
    con.close()
    con = open_readonly(db)
    try:
        assert _facts_columns(con, json_path("output.v")) is not None  # "from facts" does start there
        from_facts, from_payloads = (
            drift_from_audit(con, model="m", path="output.v", start=oct1, split=nov1, end=datetime(2026, 12, 1),
                             metric=metric, period="day", use_facts=use_facts)
            for use_facts in (True, False))
    finally:
        con.close()
    assert from_facts == from_payloads
    r = from_facts
    assert r.kind == kind
    said = [n for n in r.notes if "in some calls" in n]
    if kind == "numeric":  # as before: deciles of the reference, KS
        assert abs(r.psi - _reference_psi([float(v) for v in ref], [float(v) for v in cur], False)) <= TOL
        assert abs(r.ks.statistic - scipy_stats.ks_2samp(ref, cur).statistic) <= TOL
        assert said == []
        return
    ref_cats, cur_cats = [_shown(v) for v in ref], [_shown(v) for v in cur]
    assert [b.bin for b in r.bins] == sorted(set(ref_cats) | set(cur_cats))
    assert {b.bin: (b.ref_count, b.cur_count) for b in r.bins} == {
        c: (ref_cats.count(c), cur_cats.count(c)) for c in set(ref_cats) | set(cur_cats)}
    assert abs(r.psi - _reference_psi(ref_cats, cur_cats, True)) <= TOL
    want = _chi2(ref_cats, cur_cats)
    assert abs(r.chi2.statistic - want.statistic) <= TOL and abs(r.chi2.pvalue - want.pvalue) <= 1e-9
    if note:  # the type changed between the windows: that is drift, and the numbers say so
        assert r.psi > 0.2 and r.chi2.pvalue < 0.05
    assert said == ([note] if note else [])


def test_categories_that_could_not_be_named_apart_are_refused_not_merged(tmp_path):
    """1, "1" and the string "1" with its quotes: shown apart, two of them would print as "1"."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import drift_from_audit
    from policyengine.reporting.db import open_readonly

    oct1, nov1 = datetime(2026, 10, 1), datetime(2026, 11, 1)
    story = [(t0 + timedelta(hours=i), "model_call", "a", None, None, {"model": "m", "output": {"v": v}}, "h")
             for t0, values in ((oct1, [1, "x"] * 3), (nov1, ["1", '"1"'] * 3)) for i, v in enumerate(values)]
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    try:
        with pytest.raises(ReportError, match='values 1 at output.v are strings .* another string category already '
                                              'reads "1": the categories cannot be named apart, so drift is not'):
            drift_from_audit(con, model="m", path="output.v", start=oct1, split=nov1, end=datetime(2026, 12, 1),
                             metric="chi2")
    finally:
        con.close()


# --- compared as numbers, a string is not a number ("1" reads as 1, and audit_facts keeps both as 1) -------------

NUMBERS = [0.5, 1, 2, 3, 4, 5, 6, 7.25, 8, 9, 10]
CURRENT = [1, "1", 2, "2.5", 3, 5, 8, "1", 13]
LEFT_OUT = "were left out: numeric drift counts JSON numbers only"

# (case, path, reference values, current values, metric, the note)
STRINGS_AMONG_NUMBERS = [
    ('"1" and "2.5" among numbers (PSI)', "output.v", NUMBERS, CURRENT, "psi",
     f'0 reference and 3 current call(s) with a string at output.v that reads as a number ("1", "2.5") {LEFT_OUT}'),
    ('"1" and "2.5" among numbers (KS)', "output.v", NUMBERS, CURRENT, "ks",
     f'0 reference and 3 current call(s) with a string at output.v that reads as a number ("1", "2.5") {LEFT_OUT}'),
    ("strings in both windows, more than three", "output.v", [*NUMBERS, "7"], [*CURRENT, "4"], "psi",
     f'1 reference and 4 current call(s) with a string at output.v that reads as a number ("1", "2.5", "4", ...) '
     f"{LEFT_OUT}"),
    ("strings no JSON number prints as", "output.v", NUMBERS, [1, 2, "nan", " 3", "1_000", 13], "psi",
     f'0 reference and 3 current call(s) with a string at output.v that reads as a number (" 3", "1_000", "nan") '
     f"{LEFT_OUT}"),
    ("a top-level path (its parent is no audit_facts column)", "v", NUMBERS, CURRENT, "ks",
     f'0 reference and 3 current call(s) with a string at v that reads as a number ("1", "2.5") {LEFT_OUT}'),
]


def _log_of(tmp_path: Path, path: str, ref: list[object], cur: list[object]) -> Path:
    """Model m's calls holding ``ref`` at dotted ``path`` in October and ``cur`` in November, with the facts a
    signed log keeps (VARCHAR: 1 and "1" both as 1)."""
    from datetime import datetime, timedelta

    import duckdb
    from test_reports import write_audit_db

    from policyengine.audit.facts import FactsWriter

    def payload(v: object) -> dict:
        for key in reversed(path.split(".")):
            v = {key: v}
        return {"model": "m", **v}  # type: ignore[dict-item]

    story = [(t0 + timedelta(hours=i), "model_call", "a", None, None, payload(v), "h")
             for t0, values in ((datetime(2026, 10, 1), ref), (datetime(2026, 11, 1), cur))
             for i, v in enumerate(values)]
    db = write_audit_db(tmp_path / "a.duckdb", story)
    con = duckdb.connect(str(db))
    FactsWriter(con)
    con.close()
    return db


def _drift_both_ways(db: Path, path: str, metric: str) -> list[object]:
    """drift_from_audit of the October and November windows from audit_facts and from the payloads (a ReportError
    is returned as its text): the two must agree."""
    from datetime import datetime

    from policyengine.reporting.audit_source import _facts_columns, drift_from_audit, json_path
    from policyengine.reporting.db import open_readonly

    con = open_readonly(db)
    out: list[object] = []
    try:
        assert _facts_columns(con, json_path(path)) is not None  # "from facts" does start there
        for use_facts in (True, False):
            try:
                out.append(drift_from_audit(con, model="m", path=path, start=datetime(2026, 10, 1),
                                            split=datetime(2026, 11, 1), end=datetime(2026, 12, 1), metric=metric,
                                            period="day", use_facts=use_facts))
            except ReportError as e:
                out.append(str(e))
    finally:
        con.close()
    return out


@pytest.mark.parametrize(("path", "ref", "cur", "metric", "note"), [c[1:] for c in STRINGS_AMONG_NUMBERS],
                         ids=[c[0] for c in STRINGS_AMONG_NUMBERS])
def test_strings_among_numbers_are_left_out_with_a_note_from_facts_and_from_payloads(
        tmp_path, path, ref, cur, metric, note):
    """"1" reads as the number 1 but is a string: the numbers are compared without it, and a note counts it."""
    from_facts, from_payloads = _drift_both_ways(_log_of(tmp_path, path, ref, cur), path, metric)
    assert from_facts == from_payloads
    r = from_facts
    ref_numbers, cur_numbers = ([v for v in values if not isinstance(v, str)] for values in (ref, cur))
    assert r.kind == "numeric" and (r.n_reference, r.n_current) == (len(ref_numbers), len(cur_numbers))
    assert abs(r.psi - _reference_psi(ref_numbers, cur_numbers, False)) <= TOL
    assert abs(r.ks.statistic - scipy_stats.ks_2samp(ref_numbers, cur_numbers).statistic) <= TOL
    assert sum(p.n_current for p in r.over_time) == len(cur_numbers)
    assert [n for n in r.notes if "string" in n] == [note]


# (case, path, reference values, current values, metric, the refusal)
NO_NUMBER_LEFT = [
    ("the current window holds only strings", "output.v", NUMBERS, ["1", "2.5", "1"], "psi",
     "output.v of model 'm' has no JSON number in the current window (0 reference and 3 current call(s) with a "
     'string at output.v that reads as a number ("1", "2.5")): numeric drift counts JSON numbers only, so drift is '
     "not computed (--categorical, or a chi2 rule, compares the values as categories)"),
    ("both windows hold only strings", "v", ["1", "2"], ["1", "3"], "ks",
     "v of model 'm' has no JSON number in the reference or current window (2 reference and 2 current call(s) with "
     'a string at v that reads as a number ("1", "2", "3")): numeric drift counts JSON numbers only, so drift is '
     "not computed (--categorical, or a chi2 rule, compares the values as categories)"),
]


@pytest.mark.parametrize(("path", "ref", "cur", "metric", "refusal"), [c[1:] for c in NO_NUMBER_LEFT],
                         ids=[c[0] for c in NO_NUMBER_LEFT])
def test_a_window_with_no_number_but_strings_is_refused_naming_them(tmp_path, path, ref, cur, metric, refusal):
    """Left out, the strings would leave a window empty, read as "no values": the refusal says what is there."""
    assert _drift_both_ways(_log_of(tmp_path, path, ref, cur), path, metric) == [refusal, refusal]


def test_numbers_only_from_facts_on_a_nested_path_read_no_payload(tmp_path, monkeypatch):
    """The fast path stays: the parent object's column says no string is there ("label": "1" beside is no matter)."""
    from datetime import datetime

    from policyengine.reporting import audit_source
    from policyengine.reporting.db import open_readonly, sql

    db = _log_of(tmp_path, "output", [{"v": v, "label": "1"} for v in NUMBERS],
                 [{"v": v, "label": "1"} for v in [1, 2, 3, 5, 8, 13]])
    asked: list[str] = []
    monkeypatch.setattr(audit_source, "sql", lambda name: asked.append(name) or sql(name))
    con = open_readonly(db)
    try:
        r = audit_source.drift_from_audit(con, model="m", path="output.v", start=datetime(2026, 10, 1),
                                          split=datetime(2026, 11, 1), end=datetime(2026, 12, 1))
    finally:
        con.close()
    assert r.kind == "numeric" and (r.n_reference, r.n_current) == (11, 6) and not [n for n in r.notes if "string" in n]
    assert "drift_facts_strings" in asked and "drift_input_from_facts" in asked
    assert not [name for name in asked if name.startswith(("drift_input_from_audit", "drift_payload_strings"))]


def test_booleans_among_numbers_are_not_numbers_either(tmp_path):
    """true never read as a number (it does not cast to DOUBLE): the path mixes numbers and other values, as before."""
    db = _log_of(tmp_path, "output.v", NUMBERS, [1, True, 2, "2.5", 3])
    psi = _drift_both_ways(db, "output.v", "psi")
    assert psi[0] == psi[1] and psi[0].kind == "categorical" and "true" in [b.bin for b in psi[0].bins]
    assert _drift_both_ways(db, "output.v", "ks") == ["output.v of model 'm' is not numeric: the KS statistic needs "
                                                      "numbers"] * 2
