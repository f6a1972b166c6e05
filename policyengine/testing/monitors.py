"""Monitor cases: a ``bias`` or ``drift`` rule judged by the real monitor on sample data.

A monitor case's sample rows become ``model_call`` events of an in-memory audit
log (``sql/sample_audit_log_*.sql``); the rule is then evaluated by
``policyengine.reporting.monitor.evaluate_bias`` / ``evaluate_drift``, the very
functions ``policyengine monitor`` runs over the real audit log. So the metric,
the rule's threshold, ``min samples``, ``window`` and ``baseline`` mean exactly
what they mean in production; nothing here computes a metric.

A row without a time is placed in the middle of the rule's window: for a bias
rule ``now - window / 2``; for a drift rule ``now - baseline / 2`` (current side)
or ``now - 1.5 * baseline`` (reference side).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..store.files import packaged_sql
from .cases import MonitorCase, SampleRow, TestFile, TestFileError

_BIAS_ONLY = ("group", "outcome", "label")
_DRIFT_ONLY = ("value", "side")


def _sql(name: str) -> str:
    return packaged_sql(__package__, name)


@dataclass(frozen=True, slots=True)
class MonitorCaseResult:
    """The outcome of one monitor case, in the shape the reports share with request cases."""

    file: str
    case: MonitorCase
    kind: str  # bias | drift
    mismatches: tuple[str, ...]
    result: Any  # policyengine.reporting.monitor.MonitorResult
    explanation: str
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.case.name}"


def monitor_rules(policy: Any) -> dict[str, tuple[str, Any]]:
    """Every bias and drift rule of ``policy``: id -> (kind, declaration)."""
    ps = policy.policy_set
    out: dict[str, tuple[str, Any]] = {s.id: ("bias", s.decl) for s in ps.biases}
    out.update({s.id: ("drift", s.decl) for s in ps.drifts})
    return out


def validate_monitor_case(case: MonitorCase, policy: Any, hint: Any) -> None:
    """The case names a bias or drift rule and its rows give that kind's columns; else ``TestFileError``."""
    rules = monitor_rules(policy)
    if case.rule not in rules:
        known = ", ".join(sorted(rules)) or "none declared"
        raise TestFileError(case.rule_span, f"monitor case {case.name!r}: {case.rule!r} is not a bias or drift rule"
                                            f"{hint(case.rule, rules)} (bias and drift rules: {known})")
    kind, _ = rules[case.rule]
    for row in case.rows:
        _check_row(row, kind, case.name)


def _check_row(row: SampleRow, kind: str, name: str) -> None:
    def fail(message: str) -> TestFileError:
        return TestFileError(row.span, f"monitor case {name!r}: {message}")

    if kind == "bias":
        wrong = [c for c in row.given if c in _DRIFT_ONLY]
        if wrong:
            raise fail(f"{wrong[0]!r} is for drift rules; a bias row gives group, outcome and optionally label")
        for need in ("group", "outcome"):
            if need not in row.given:
                raise fail(f"a bias row needs a {need!r}")
    else:
        wrong = [c for c in row.given if c in _BIAS_ONLY]
        if wrong:
            raise fail(f"{wrong[0]!r} is for bias rules; a drift row gives a value and a side or a time")
        if "value" not in row.given:
            raise fail("a drift row needs a 'value'")
        timed = row.at is not None or row.ago is not None
        if row.side is not None and timed:
            raise fail("give a drift row's 'side' or its time ('at' / 'ago'), not both")
        if row.side is None and not timed:
            raise fail("a drift row needs a 'side' (reference or current) or a time ('at' / 'ago')")


def _when(row: SampleRow, case: MonitorCase, kind: str, decl: Any) -> datetime:
    """The time of a sample row: as given, else the middle of the rule's window."""
    from ..reporting.monitor import DEFAULT_WINDOW

    if row.at is not None:
        return row.at
    if row.ago is not None:
        return case.now - timedelta(seconds=row.ago)
    if kind == "bias":
        window = timedelta(seconds=decl.window.seconds) if decl.window else DEFAULT_WINDOW
        return case.now - window / 2
    baseline = timedelta(seconds=decl.baseline.seconds)
    return case.now - (baseline / 2 if row.side == "current" else baseline * 3 / 2)


def _nested(payload: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``payload[a][b] = value`` for ``dotted`` ``a.b``."""
    parts = [p for p in dotted.split(".") if p]
    for part in parts[:-1]:
        inner = payload.get(part)
        if not isinstance(inner, dict):
            inner = payload[part] = {}
        payload = inner
    payload[parts[-1]] = value


def _payload(row: SampleRow, kind: str, decl: Any) -> str:
    payload: dict[str, Any] = {"model": row.model or decl.model.value}
    if kind == "bias":
        payload["outcome"] = row.outcome
        if "label" in row.given:
            payload["label"] = row.label
        _nested(payload, decl.group_by.dotted, row.group)
    else:
        _nested(payload, decl.of.dotted, row.value)
    return json.dumps(payload, sort_keys=True)


def run_monitor_case(test_file: TestFile, case: MonitorCase, policy: Any) -> MonitorCaseResult:
    """Fill an in-memory audit log with the case's rows and let the monitor judge the rule."""
    import duckdb

    from ..reporting.db import first_line, memory
    from ..reporting.monitor import evaluate_bias, evaluate_drift

    start = time.perf_counter()
    kind, decl = monitor_rules(policy)[case.rule]
    con = memory()
    try:
        con.execute(_sql("sample_audit_log_create"))
        try:
            con.execute(_sql("sample_audit_log_insert"), {
                "ts": [_when(r, case, kind, decl) for r in case.rows],
                "payload": [_payload(r, kind, decl) for r in case.rows],
                "n": [r.count for r in case.rows],
            })
        except (duckdb.Error, OverflowError, ValueError) as exc:  # e.g. a time out of range
            raise TestFileError(case.span, f"monitor case {case.name!r}: cannot load the sample rows "
                                           f"({first_line(exc)})") from None
        evaluate = evaluate_bias if kind == "bias" else evaluate_drift
        result = evaluate(con, case.rule, decl, case.now)
    finally:
        con.close()
    mismatches = compare_monitor(case, result)
    return MonitorCaseResult(test_file.path, case, kind, tuple(mismatches), result, describe(result),
                             time.perf_counter() - start)


def _word(flag: bool) -> str:
    return "true" if flag else "false"


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"


def compare_monitor(case: MonitorCase, result: Any) -> list[str]:
    """How the monitor's conclusion differs from what the case expects (empty when it passes)."""
    exp = case.expect
    out: list[str] = []
    if result.error is not None:
        if exp.error is None:
            return [f"the monitor could not evaluate {case.rule}: {result.error}"]
        if exp.error.lower() not in result.error.lower():
            return [f"error: expected one containing {exp.error!r}, got {result.error!r}"]
    elif exp.error is not None:
        out.append(f"error: expected one containing {exp.error!r}, but the rule was evaluated "
                   f"({result.metric} {_num(result.value)})")
    if exp.breach is not None and result.breach != exp.breach:
        out.append(f"breach: expected {_word(exp.breach)}, got {_word(result.breach)} "
                   f"({result.metric} {_num(result.value)}, healthy when {result.threshold})")
    if exp.check_value:
        if exp.value is None or result.value is None:
            if exp.value != result.value:
                out.append(f"value: expected {_num(exp.value)}, got {_num(result.value)}")
        elif abs(result.value - exp.value) > exp.tolerance:
            out.append(f"value: expected {exp.value:g} ± {exp.tolerance:g}, got {result.value:.12g}")
    if exp.action is not None and result.action != exp.action:
        out.append(f"action: expected {exp.action}, got {result.action}")
    return out


def describe(result: Any) -> str:
    """The monitor's result in words, for a failure report."""
    d = result.details
    lines = [f"{result.kind} {result.rule} on model {result.model}: {result.metric} {_num(result.value)}, "
             f"healthy when {result.threshold}; breach {_word(result.breach)}; on breach {result.action}"
             + (f" to role {result.escalate_to}" if result.escalate_to else "")]
    if result.kind == "bias":
        lines.append(f"window {result.window_start:%Y-%m-%d %H:%M} to {result.window_end:%Y-%m-%d %H:%M} UTC")
        if d:
            lines.append(f"{d.get('decisions')} decision(s), min samples {d.get('min_samples')}, "
                         f"reference group {d.get('reference_group')}")
            for group, g in sorted((d.get("groups") or {}).items()):
                judged = "judged" if g["judged"] else "not judged (under min samples)"
                lines.append(f"  group {group}: n={g['n']} selection rate {g['selection_rate']:.6g}, {judged}")
    else:
        baseline = d.get("baseline_start") if d else None
        lines.append(f"current window {result.window_start:%Y-%m-%d %H:%M} to {result.window_end:%Y-%m-%d %H:%M} UTC"
                     + (f", baseline from {baseline}" if baseline else ""))
        if d:
            lines.append(f"reference n={d.get('n_reference')}, current n={d.get('n_current')}, "
                         f"psi {_num(d.get('psi'))}, ks {_num(d.get('ks'))}")
    for note in (d or {}).get("notes", ()):
        lines.append(f"  note: {note}")
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """``ago`` as written: 2588400 seconds -> ``719 hours``."""
    for unit, size in (("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def sample_text(case: MonitorCase) -> str:
    """The case's sample rows, briefly, for a failure report."""
    lines = []
    for row in case.rows[:20]:
        cells = {k: (_duration(getattr(row, k)) if k == "ago" else getattr(row, k)) for k in row.given}
        where = f"{row.span.file}:{row.span.line}"
        shown = ", ".join(f"{k}={(v.isoformat() if isinstance(v, datetime) else v)}" for k, v in cells.items())
        lines.append(f"{shown}  ({where})")
    if len(case.rows) > 20:
        lines.append(f"... {len(case.rows) - 20} more row(s)")
    return "\n".join(lines)
