"""Bias metrics: the numbers must be fairlearn's (and AIF360's), to 1e-9.

Three sources of truth: the oracle files in tests/oracles/fairness
(values fairlearn 0.15 gave on data we did not generate), fairlearn itself on
data generated here, and hand-worked edge cases for min samples and references.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine.reporting import ReportError, bias_from_csv

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")

ORACLES = Path(__file__).resolve().parent / "oracles" / "fairness"
TOL = 1e-9
sys.path.insert(0, str(Path(__file__).parent))  # test_reports: the audit-log fixture


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _oracle() -> dict:
    return json.loads((ORACLES / "expected_fairness.json").read_text())


def _same(got: float | None, want: float | str | None) -> bool:
    if want is None or (isinstance(want, str) and want == "NaN") or (isinstance(want, float) and math.isnan(want)):
        return got is None  # undefined is reported as None with a note, never NaN
    return got is not None and abs(got - float(want)) <= TOL


# --- the oracle: 10,000 decisions, three groups, labels ---------------------------


def test_oracle_groups_match_fairlearn_by_group():
    r = bias_from_csv(ORACLES / "decisions.csv", outcome="y_pred", positive="1", group="group", label="y_true")
    want = _oracle()["main"]["by_group"]
    assert [g.group for g in r.groups] == sorted(want)
    for g in r.groups:
        w = want[g.group]
        assert (g.n, g.tp, g.fp, g.tn, g.fn) == (w["count"], w["tp"], w["fp"], w["tn"], w["fn"])
        assert abs(g.selection_rate - w["selection_rate"]) <= TOL
        assert abs(g.tpr - w["true_positive_rate"]) <= TOL
        assert abs(g.fpr - w["false_positive_rate"]) <= TOL


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("demographic_parity_difference", "demographic_parity_difference"),
        ("demographic_parity_ratio", "demographic_parity_ratio"),
        ("disparate_impact", "demographic_parity_ratio"),
        ("equalized_odds_difference", "equalized_odds_difference"),
        ("equalized_odds_ratio", "equalized_odds_ratio"),
    ],
)
def test_oracle_aggregates_match_fairlearn_functions(ours, theirs):
    r = bias_from_csv(ORACLES / "decisions.csv", outcome="y_pred", positive="1", group="group", label="y_true")
    assert _same(getattr(r, ours), _oracle()["main"]["fairlearn_functions"][theirs])


def test_oracle_per_group_impact_matches_aif360_vs_highest_rate_group():
    r = bias_from_csv(ORACLES / "decisions.csv", outcome="y_pred", positive="1", group="group")
    want = _oracle()["main"]["aif360_style_vs_highest_rate_group"]
    assert r.reference_group == want["reference_group"]
    for g in r.groups:
        assert abs(g.impact_ratio - want["disparate_impact"][g.group]) <= TOL
        assert abs(g.parity_difference - want["statistical_parity_difference"][g.group]) <= TOL
    flags = want["four_fifths_flag_(impact_ratio<0.8)"]
    assert set(r.flagged_groups) == {g for g, flagged in flags.items() if flagged}


@pytest.mark.parametrize(
    "case", ["edge_no_positives_in_group", "edge_all_zero_selection", "edge_one_group_zero_selection", "edge_singleton_group"]
)
def test_oracle_edge_cases(case):
    want = _oracle()["edge_cases"][case]
    r = bias_from_csv(ORACLES / f"{case}.csv", outcome="y_pred", positive="1", group="group", label="y_true")
    for g in r.groups:
        w = want["by_group"][g.group]
        assert abs(g.selection_rate - w["selection_rate"]) <= TOL
        assert abs(g.tpr - w["true_positive_rate"]) <= TOL
        assert abs(g.fpr - w["false_positive_rate"]) <= TOL
    for key in ("demographic_parity_difference", "demographic_parity_ratio",
                "equalized_odds_difference", "equalized_odds_ratio"):
        assert _same(getattr(r, key), want[key]), key


def test_undefined_ratio_is_said_in_words_not_nan():
    r = bias_from_csv(ORACLES / "edge_all_zero_selection.csv", outcome="y_pred", positive="1", group="group", label="y_true")
    assert r.demographic_parity_ratio is None and r.equalized_odds_ratio is None
    assert any("undefined" in n and "selection rate is 0" in n for n in r.notes)
    assert any("equalized odds ratio undefined" in n for n in r.notes)
    assert "NaN" not in json.dumps(r.to_dict())


# --- fairlearn itself on generated data ---------------------------------------------


decisions = st.lists(
    st.tuples(st.sampled_from(["north", "south", "east", "west"]), st.booleans(), st.booleans()),
    min_size=2,
    max_size=120,
)


@settings(max_examples=15, deadline=None)
@given(rows=decisions)
def test_every_metric_equals_fairlearn_on_generated_data(rows):
    groups = [g for g, _, _ in rows]
    y_pred = [int(p) for _, p, _ in rows]
    y_true = [int(t) for _, _, t in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "d.csv", ["region", "decision", "truth"],
                      [[g, "approve" if p else "decline", "approve" if t else "decline"] for g, p, t in rows])
        r = bias_from_csv(path, outcome="decision", positive="approve", group="region", label="truth")
    fl = fairlearn_metrics
    kw = {"sensitive_features": groups}
    checks = {
        "demographic_parity_difference": fl.demographic_parity_difference(y_true, y_pred, **kw),
        "demographic_parity_ratio": fl.demographic_parity_ratio(y_true, y_pred, **kw),
        "equalized_odds_difference": fl.equalized_odds_difference(y_true, y_pred, **kw),
    }
    for key, want in checks.items():
        assert _same(getattr(r, key), float(want)), (key, getattr(r, key), want)
    frame = fl.MetricFrame(
        metrics={"tpr": fl.true_positive_rate, "fpr": fl.false_positive_rate, "sr": fl.selection_rate},
        y_true=y_true, y_pred=y_pred, sensitive_features=groups,
    )
    for g in r.groups:
        assert abs(g.selection_rate - frame.by_group["sr"][g.group]) <= TOL
        assert abs(g.tpr - frame.by_group["tpr"][g.group]) <= TOL
        assert abs(g.fpr - frame.by_group["fpr"][g.group]) <= TOL
    eo_ratio = float(fl.equalized_odds_ratio(y_true, y_pred, **kw))
    tpr_ratio = float(frame.ratio()["tpr"])
    if math.isnan(tpr_ratio):
        # fairlearn takes Python's min() over (tpr_ratio, fpr_ratio), which returns
        # NaN whenever the TPR ratio is NaN; we take the worst defined component.
        fpr_ratio = float(frame.ratio()["fpr"])
        assert _same(r.equalized_odds_ratio, None if math.isnan(fpr_ratio) else fpr_ratio)
    else:
        assert _same(r.equalized_odds_ratio, eo_ratio)


# --- min samples and reference groups ------------------------------------------------


def test_groups_under_min_samples_are_reported_not_judged(tmp_path):
    rows = [["a", 1]] * 6 + [["a", 0]] * 4 + [["b", 1]] * 3 + [["b", 0]] * 7 + [["tiny", 0]] * 2
    path = _write(tmp_path / "d.csv", ["g", "y"], rows)
    r = bias_from_csv(path, outcome="y", positive="1", group="g", min_samples=5)
    by = {g.group: g for g in r.groups}
    assert by["tiny"].n == 2 and not by["tiny"].judged and by["tiny"].selection_rate == 0.0
    # judged over a and b only: 0.3 / 0.6, not 0 / 0.6
    assert r.judged_groups == 2
    assert abs(r.disparate_impact - 0.5) <= TOL
    assert abs(r.demographic_parity_difference - 0.3) <= TOL
    assert "tiny" not in r.flagged_groups and "b" in r.flagged_groups
    assert any("reported, not judged: tiny" in n for n in r.notes)


def test_nothing_judged_when_every_group_is_small(tmp_path):
    path = _write(tmp_path / "d.csv", ["g", "y"], [["a", 1], ["b", 0]])
    r = bias_from_csv(path, outcome="y", positive="1", group="g", min_samples=100)
    assert r.judged_groups == 0 and r.disparate_impact is None and r.flagged_groups == ()
    assert any("nothing is judged" in n for n in r.notes)


@pytest.mark.parametrize(
    "reference, impact",
    [("a", {"a": 1.0, "b": 0.5, "c": 0.25}), ("b", {"a": 2.0, "b": 1.0, "c": 0.5}), (None, {"a": 1.0, "b": 0.5, "c": 0.25})],
)
def test_impact_ratio_against_a_reference_group(tmp_path, reference, impact):
    rows = ([["a", 1]] * 8 + [["a", 0]] * 2 + [["b", 1]] * 4 + [["b", 0]] * 6 + [["c", 1]] * 2 + [["c", 0]] * 8)
    path = _write(tmp_path / "d.csv", ["g", "y"], rows)
    r = bias_from_csv(path, outcome="y", positive="1", group="g", reference=reference)
    assert {g.group: round(g.impact_ratio, 12) for g in r.groups} == impact


def test_reference_group_with_zero_selection_leaves_impact_undefined(tmp_path):
    path = _write(tmp_path / "d.csv", ["g", "y"], [["a", 1], ["a", 0], ["z", 0], ["z", 0]])
    r = bias_from_csv(path, outcome="y", positive="1", group="g", reference="z")
    assert all(g.impact_ratio is None for g in r.groups)
    assert any("reference group 'z' has selection rate 0" in n for n in r.notes)


def test_user_style_csv_with_text_labels_and_crlf(tmp_path):
    """A file as a model-risk team exports it: quoted text, spaces, CRLF line ends."""
    text = (
        '"Applicant Region","Decision","Outcome (ground truth)"\r\n'
        '"EU","Approved","Approved"\r\n"EU","Declined","Approved"\r\n"EU","Approved","Declined"\r\n'
        '"US","Approved","Approved"\r\n"US","Approved","Approved"\r\n"US","Declined","Declined"\r\n'
        '"APAC","Declined","Approved"\r\n"APAC","Declined","Declined"\r\n'
    )
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode())
    r = bias_from_csv(path, outcome="Decision", positive="Approved", group="Applicant Region",
                      label="Outcome (ground truth)")
    groups = ["EU"] * 3 + ["US"] * 3 + ["APAC"] * 2
    y_pred = [1, 0, 1, 1, 1, 0, 0, 0]
    y_true = [1, 1, 0, 1, 1, 0, 1, 0]
    fl = fairlearn_metrics
    assert _same(r.demographic_parity_difference, fl.demographic_parity_difference(y_true, y_pred, sensitive_features=groups))
    assert _same(r.equalized_odds_difference, fl.equalized_odds_difference(y_true, y_pred, sensitive_features=groups))
    assert _same(r.equalized_odds_ratio, fl.equalized_odds_ratio(y_true, y_pred, sensitive_features=groups))


# --- bad input: one clear line --------------------------------------------------------


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        ([["a", "1"]], {"group": "nope"}, "no column 'nope' for --group"),
        ([["a", "1"]], {"outcome": "nope"}, "no column 'nope' for --outcome"),
        ([["a", "1"]], {"label": "nope"}, "no column 'nope' for --label"),
        ([["a", "1"], ["", "0"]], {}, "d.csv:3: empty group in column 'g'"),
        ([["a", "1"], ["b", ""]], {}, "d.csv:3: empty outcome in column 'y'"),
        ([["a", "1"]], {"reference": "zz"}, "reference group 'zz' has no rows"),
        ([["a", "1"]], {"min_samples": -1}, "--min-samples must be 0 or more"),
        ([], {}, "has a header but no data rows"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, rows, kwargs, message):
    path = _write(tmp_path / "d.csv", ["g", "y"], rows)
    args = {"outcome": "y", "positive": "1", "group": "g", **kwargs}
    with pytest.raises(ReportError) as e:
        bias_from_csv(path, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ReportError, match="CSV file not found"):
        bias_from_csv(tmp_path / "none.csv", outcome="y", positive="1", group="g")


def test_positive_value_never_seen_is_noted(tmp_path):
    path = _write(tmp_path / "d.csv", ["g", "y"], [["a", "yes"], ["b", "no"]])
    r = bias_from_csv(path, outcome="y", positive="Yes", group="g")
    assert any("no row has y = 'Yes'" in n for n in r.notes)


# --- the same SQL over the audit log ----------------------------------------------------------


def test_audit_log_source_gives_the_oracle_numbers(tmp_path):
    """The oracle decisions written as model_call events: same metrics as from the CSV."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import bias_from_audit
    from policyengine.reporting.db import open_readonly

    t0 = datetime(2026, 11, 1)
    story = []
    with (ORACLES / "decisions.csv").open() as f:
        for i, row in enumerate(csv.DictReader(f)):
            payload = {"model": "scorer", "subject": {"vendor region": row["group"]},
                       "outcome": "approved" if row["y_pred"] == "1" else "declined",
                       "label": "approved" if row["y_true"] == "1" else "declined", "output": {}}
            story.append((t0 + timedelta(seconds=i), "model_call", "agent", "wf", "r", payload, "h"))
    story.append((t0, "model_call", "agent", "wf", "r", {"model": "other", "subject": {"vendor region": "A"},
                                                         "outcome": "approved"}, "h"))
    story.append((t0, "model_call", "agent", "wf", "r", {"model": "scorer", "subject": {}, "outcome": "approved"}, "h"))
    story.append((t0, "model_call", "agent", "wf", "r", {"model": "scorer", "status": "error"}, "h"))
    db = write_audit_db(tmp_path / "audit.duckdb", story)
    con = open_readonly(db)
    r = bias_from_audit(con, model="scorer", group="subject.vendor region", positives=["approved"],
                        start=t0, end=t0 + timedelta(days=1))
    con.close()
    want = _oracle()["main"]
    assert r.total_rows == 10000 and r.has_label
    assert any("1 call(s) without a value at subject.vendor region" in n for n in r.notes)
    for key in ("demographic_parity_difference", "demographic_parity_ratio",
                "equalized_odds_difference", "equalized_odds_ratio"):
        assert _same(getattr(r, key), want["fairlearn_functions"][key]), key
    assert {g.group: g.n for g in r.groups} == {g: int(v["count"]) for g, v in want["by_group"].items()}


def test_audit_log_source_errors(tmp_path):
    from datetime import datetime

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import bias_from_audit
    from policyengine.reporting.db import open_readonly

    t0 = datetime(2026, 11, 1)
    db = write_audit_db(tmp_path / "a.duckdb", [(t0, "model_call", "a", None, None,
                                                 {"model": "m", "outcome": "x", "subject": {}}, "h")])
    con = open_readonly(db)
    with pytest.raises(ReportError, match="no model_call decisions of model 'zz'"):
        bias_from_audit(con, model="zz", group="subject.g", positives=["x"], start=t0, end=datetime(2026, 12, 1))
    with pytest.raises(ReportError, match="has a value at 'subject.g' \\(empty group\\)"):
        bias_from_audit(con, model="m", group="subject.g", positives=["x"], start=t0, end=datetime(2026, 12, 1))
    con.close()


@settings(max_examples=15, deadline=None)
@given(rows=decisions, min_samples=st.integers(0, 40))
def test_aggregates_with_min_samples_equal_fairlearn_on_the_judged_groups(rows, min_samples):
    """Unjudged groups are left out of the aggregates, nothing else changes."""
    counts = {g: sum(1 for r in rows if r[0] == g) for g in {r[0] for r in rows}}
    judged = [r for r in rows if counts[r[0]] >= min_samples]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "d.csv", ["g", "p", "t"], [[g, int(p), int(t)] for g, p, t in rows])
        r = bias_from_csv(path, outcome="p", positive="1", group="g", label="t", min_samples=min_samples)
    assert {g.group for g in r.groups if g.judged} == {r_[0] for r_ in judged}
    if not judged:
        assert r.demographic_parity_difference is None and r.equalized_odds_difference is None
        return
    kw = {"sensitive_features": [g for g, _, _ in judged]}
    y_true, y_pred = [int(t) for _, _, t in judged], [int(p) for _, p, _ in judged]
    fl = fairlearn_metrics
    assert _same(r.demographic_parity_difference, float(fl.demographic_parity_difference(y_true, y_pred, **kw)))
    assert _same(r.demographic_parity_ratio, float(fl.demographic_parity_ratio(y_true, y_pred, **kw)))
    assert _same(r.equalized_odds_difference, float(fl.equalized_odds_difference(y_true, y_pred, **kw)))


def test_audit_labels_that_are_not_outcomes_are_not_ground_truth(tmp_path):
    """A label naming the model's class ("duplicate") says nothing about whether "auto_resolved" was right."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import bias_from_audit
    from policyengine.reporting.db import open_readonly

    t0 = datetime(2026, 11, 1)
    story = [(t0 + timedelta(minutes=i), "model_call", "a", None, None,
              {"model": "m", "subject": {"r": "EU" if i % 2 else "US"},
               "outcome": "auto_resolved" if i % 3 else "escalated", "label": ["duplicate", "none"][i % 2]}, "h")
             for i in range(12)]
    con = open_readonly(write_audit_db(tmp_path / "a.duckdb", story))
    r = bias_from_audit(con, model="m", group="subject.r", positives=["auto_resolved"], start=t0,
                        end=t0 + timedelta(days=1))
    con.close()
    assert not r.has_label and r.equalized_odds_difference is None
    assert any("labels (duplicate, none) are never outcome values" in n for n in r.notes)


@pytest.mark.parametrize("selected_b, flagged", [(64, False), (63, True)], ids=["on the line", "just below"])
def test_the_four_fifths_line_itself_is_not_below_it(tmp_path, selected_b, flagged):
    # a: 80/100, b: 64/100 -> 0.64 / 0.8, which floating point computes as 0.7999999999999999
    rows = [["a", 1]] * 80 + [["a", 0]] * 20 + [["b", 1]] * selected_b + [["b", 0]] * (100 - selected_b)
    r = bias_from_csv(_write(tmp_path / "d.csv", ["g", "y"], rows), outcome="y", positive="1", group="g")
    assert ("b" in r.flagged_groups) is flagged


@pytest.mark.parametrize("value, op, threshold, holds_", [
    (0.64 / 0.8, ">=", 0.8, True), (0.64 / 0.8, "<", 0.8, False), (0.8 + 1e-12, "<=", 0.8, True),
    (0.79, ">=", 0.8, False), (0.2 - 1e-12, ">", 0.2, False), (0.1 + 0.2, "<=", 0.3, True), (0.31, "<=", 0.3, False),
])
def test_thresholds_are_compared_with_the_documented_tolerance(value, op, threshold, holds_):
    from policyengine.reporting.thresholds import holds

    assert holds(value, op, threshold) is holds_


@pytest.mark.parametrize(("value", "why"), [
    ("EU\u200b", "contains an invisible or control character (U+200B ZERO WIDTH SPACE)"),
    ("\u0415U", "mixes"),  # a Cyrillic Е before a Latin U
])
def test_a_group_value_that_only_looks_like_another_is_named_in_a_note(tmp_path, value, why):
    """Printed, "EU" and "EU<U+200B>" are one group; counted, they are two: the report says which is which."""
    from datetime import datetime, timedelta

    from test_reports import write_audit_db

    from policyengine.reporting.audit_source import bias_from_audit
    from policyengine.reporting.db import open_readonly

    t0 = datetime(2026, 11, 1)
    story = [(t0 + timedelta(seconds=i), "model_call", "agent", "wf", "r",
              {"model": "m", "subject": {"g": g}, "outcome": "approved" if i % 2 else "declined"}, "h")
             for i, g in enumerate(["EU"] * 6 + [value] * 6)]
    con = open_readonly(write_audit_db(tmp_path / "audit.duckdb", story))
    r = bias_from_audit(con, model="m", group="subject.g", positives=["approved"], start=t0, end=t0 + timedelta(days=1))
    con.close()
    assert sorted(g.n for g in r.groups) == [6, 6]
    (note,) = [n for n in r.notes if n.startswith("group ")]
    assert note.startswith(f"group {ascii(value)} ") and why in note and note.endswith("counted apart")


# (case, the group value of one type, the string that prints alike, how the string group is named apart, the note)
JSON_TYPES_ALIKE = [
    ("1 and \"1\"", 1, "1", '"1"', 'group value 1 is a number in some calls and a string in others'),
    ("true and \"true\"", True, "true", '"true"', "group value true is a boolean in some calls and a string"),
    ("an object and its text", {"a": 1}, '{"a":1}', '"{\\"a\\":1}"', 'group value {"a":1} is an object in some'),
]


@pytest.mark.parametrize("use_facts", [True, False], ids=["from audit_facts", "from payloads"])
@pytest.mark.parametrize(("value", "text", "shown", "note"), [c[1:] for c in JSON_TYPES_ALIKE],
                         ids=[c[0] for c in JSON_TYPES_ALIKE])
def test_group_values_of_two_json_types_that_print_alike_are_two_groups_and_named_in_a_note(
        tmp_path, use_facts, value, text, shown, note):
    """1 (a number) and "1" (a string) are two values: json_extract_string, and so audit_facts, print both as 1."""
    from datetime import UTC, datetime, timedelta

    from policyengine.audit import AuditLog, generate_key
    from policyengine.reporting.audit_source import (
        _facts_columns,
        bias_from_audit,
        json_path,
    )
    from policyengine.reporting.db import open_readonly

    with AuditLog(tmp_path / "audit.duckdb", generate_key(tmp_path / "k.key")) as log:  # signed, with its facts
        for i, g in enumerate([value] * 6 + [text] * 4):
            log.append("model_call", actor="agent", payload={
                "model": "m", "subject": {"g": g}, "outcome": "approved" if i % 2 else "declined"})
    now = datetime.now(UTC)
    con = open_readonly(tmp_path / "audit.duckdb")
    try:
        assert _facts_columns(con, json_path("subject.g")) is not None  # "from audit_facts" does start there
        r = bias_from_audit(con, model="m", group="subject.g", positives=["approved"], start=now - timedelta(days=1),
                            end=now + timedelta(days=1), use_facts=use_facts)
    finally:
        con.close()
    assert {g.group: g.n for g in r.groups} == {text: 6, shown: 4}
    (said,) = [n for n in r.notes if n.startswith("group value ")]
    assert said.startswith(note) and said.endswith(f"counted as two groups, {text} and {shown}")


def test_groups_that_could_not_be_named_apart_are_refused_not_merged(tmp_path):
    """1, "1" and the string "1" with its quotes: shown apart, two of them would print as "1"."""
    from datetime import UTC, datetime, timedelta

    from policyengine.audit import AuditLog, generate_key
    from policyengine.reporting.audit_source import bias_from_audit
    from policyengine.reporting.db import open_readonly

    with AuditLog(tmp_path / "audit.duckdb", generate_key(tmp_path / "k.key")) as log:
        for i, g in enumerate([1, "1", '"1"'] * 4):
            log.append("model_call", payload={"model": "m", "subject": {"g": g}, "outcome": "approved" if i % 2 else "x"})
    now = datetime.now(UTC)
    con = open_readonly(tmp_path / "audit.duckdb")
    try:
        with pytest.raises(ReportError, match='group values 1 are strings .* already reads "1": the groups cannot be named apart'):
            bias_from_audit(con, model="m", group="subject.g", positives=["approved"], start=now - timedelta(days=1),
                            end=now + timedelta(days=1))
    finally:
        con.close()
