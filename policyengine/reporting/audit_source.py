"""Bias and drift inputs taken from the audit log's ``model_call`` events.

The monitor and ``policyengine report bias|drift --db`` read the same
``bias_input`` / ``drift_input`` tables as the offline CSV reports, so the
numbers come from the same SQL whatever the source. Attribute paths such as
``subject.vendor_region`` become JSON paths bound as parameters.

A log written by ``AuditLog`` also holds ``audit_facts`` (policyengine/audit/facts.py):
the payload values at each JSON path as columns, derived from the signed payloads and
checked by ``audit verify``. When the columns a report needs are there, it reads them
(a column scan instead of a JSON parse per record, ~10x faster); otherwise it reads
the payloads. Both give the same rows.

Columns and ``json_extract_string`` print 1 and "1" alike; a group value's JSON type
is part of it, and so is a drift value's when values are compared as categories. So
when some such value could be of another type than a string the types are read from
the payloads and such values are kept apart, with a note. Values compared as numbers
are JSON numbers only: a string that reads as one ("1") is left out, with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from ..identity import disguise, name_fold
from .bias import FOUR_FIFTHS, BiasResult, compute_bias
from .db import (
    first_line,
    one,
    open_readonly,
    require_audit_log,
    sql,
    unordered_inserts,
)
from .drift import DriftResult, compute_drift, leave_out_non_numbers, psi_over_time
from .errors import ReportError


def _facts_columns(con: duckdb.DuckDBPyConnection, path: str) -> str | None:
    """The quoted ``audit_facts`` column holding JSON path ``path``, if the log keeps one and has the facts of every
    record (else read payloads: the last records' facts may not be written yet, facts.py)."""
    from ..audit.facts import FIXED_PATHS, behind, columns, has_facts, quote_ident

    if not has_facts(con) or behind(con):
        return None
    present = set(columns(con))
    if path not in present or not set(FIXED_PATHS) <= present:
        return None
    return quote_ident(path)


def json_path(dotted: str) -> str:
    """``subject.vendor_region`` -> ``$."subject"."vendor_region"`` (each key quoted)."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ReportError(f"empty attribute path {dotted!r}")
    return "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in parts)


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


_JSON_TYPE_NAMES = {"BIGINT": "a number", "UBIGINT": "a number", "HUGEINT": "a number", "DOUBLE": "a number",
                    "BOOLEAN": "a boolean", "OBJECT": "an object", "ARRAY": "an array"}


@dataclass(frozen=True, slots=True)
class _Values:
    """The values a report keeps apart by JSON type, and what its notes call them (bias: groups; drift: categories)."""

    table: str  # bias_input, drift_input
    column: str  # grp, cat; its json_type is in column + "_type"
    value: str  # how a note names one: "group value", "value"
    where: str  # what follows the text in a note: "", " at output.label"
    one: str  # "group", "category"
    many: str  # "groups", "categories"
    report: str  # "bias", "drift"

    def sql(self, name: str) -> str:
        """json_*.sql over this table's value column and its type (identifiers cannot be bound parameters)."""
        return (sql(name).replace("{table}", self.table).replace("{value_type}", self.column + "_type")
                .replace("{value}", self.column))


_GROUPS = _Values("bias_input", "grp", "group value", "", "group", "groups", "bias")


def _could_be_typed(con: duckdb.DuckDBPyConnection, values: _Values, among: Sequence[str] | None = None) -> bool:
    """Whether some value reads as a number, boolean, object or array would print (1 or "1"? the text cannot say).

    ``among``: look only at these texts (the distinct categories a report already counted), not every row.
    """
    if among is None:
        return bool(one(con, values.sql("json_lookalikes"))[0])
    texts = replace(values, table=f"(SELECT unnest($texts) AS {values.column})")
    return bool(one(con, texts.sql("json_lookalikes"), {"texts": list(among)})[0])


def _keep_json_types_apart(con: duckdb.DuckDBPyConnection, values: _Values) -> list[str]:
    """Name apart the values a string and another JSON type print alike (1 and "1"); a note for each.

    The type is part of the value, so they are two groups (categories); the string one is shown
    as its JSON literal. A report whose values would still share a name is refused, never merged.
    """
    alike = con.execute(values.sql("json_types_alike")).fetchall()
    if not alike:
        return []
    t, v = values.table, values.column
    distinct = one(con, f"SELECT count(DISTINCT ({v}, {v}_type = 'VARCHAR')) FROM {t}")[0]
    con.execute(values.sql("json_types_rename"))
    if one(con, f"SELECT count(DISTINCT {v}) FROM {t}")[0] != distinct:
        texts, shown = ", ".join(a[0] for a in alike), " or ".join(a[2] for a in alike)
        raise ReportError(f"{values.value}s {texts}{values.where} are strings in some calls and of another JSON type "
                          f"in others, and another string {values.one} already reads {shown}: the {values.many} "
                          f"cannot be named apart, so {values.report} is not computed")
    notes = []
    for text, types, shown in alike:
        kinds = " or ".join(dict.fromkeys(_JSON_TYPE_NAMES.get(t, t.lower()) for t in types))
        notes.append(f"{values.value} {text}{values.where} is {kinds} in some calls and a string in others: "
                     f"counted as two {values.many}, {text} and {shown}")
    return notes


def _strings_possible(con: duckdb.DuckDBPyConnection, path: str, model: str, start: datetime, end: datetime, *,
                      facts: bool) -> bool:
    """Whether some call may hold a string at ``path``: its text ("1") reads as a number as 1 does.

    From the facts, a nested path's parent object column says it without a JSON parse (drift_facts_strings.sql);
    otherwise each payload's json_type at the path does, lighter than reading the values (drift_payload_strings.sql).
    """
    window = {"model": model, "start": _naive_utc(start), "end": _naive_utc(end)}
    keys = [k for k in path.split(".") if k]
    parent = _facts_columns(con, json_path(".".join(keys[:-1]))) if facts and len(keys) > 1 else None
    if parent is None:
        return bool(one(con, sql("drift_payload_strings"), {**window, "path": json_path(path)})[0])
    return bool(one(con, sql("drift_facts_strings").replace("{parent}", parent), {**window, "key": keys[-1]})[0])


def _leave_out_strings(con: duckdb.DuckDBPyConnection, path: str, model: str) -> list[str]:
    """Take the strings out of a numeric comparison (``drift_input`` typed): "1" reads as 1 but is not a number.

    A note says how many calls per window held one, and which; a window left with no number is refused
    (its strings would otherwise read as "no values"), naming the path, the strings and how many.
    """
    return leave_out_non_numbers(
        con, counted=f"call(s) with a string at {path} that reads as a number", numbers="JSON numbers",
        refused=lambda sides: f"{path} of model {model!r} has no JSON number in the {' or '.join(sides)} window",
        hint="--categorical, or a chi2 rule, compares the values as categories")


def bias_from_audit(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str,
    group: str,
    positives: Sequence[str],
    start: datetime,
    end: datetime,
    min_samples: int = 0,
    reference: str | None = None,
    threshold: float = FOUR_FIFTHS,
    use_facts: bool = True,
) -> BiasResult:
    """Bias of ``model``'s decisions in [start, end), groups by payload path ``group``.

    ``use_facts=False`` reads the payloads even where ``audit_facts`` could answer.
    """
    column = _facts_columns(con, json_path(group)) if use_facts else None
    window = {"model": model, "positives": list(positives), "start": _naive_utc(start), "end": _naive_utc(end)}
    try:
        with unordered_inserts(con):
            con.execute(sql("bias_input_create"))
            if column is not None:
                con.execute(sql("bias_input_from_facts").replace("{group}", column), window)
            else:
                con.execute(sql("bias_input_from_audit"), {**window, "group_path": json_path(group)})
            if _could_be_typed(con, _GROUPS):  # 1 or "1"? the text alone cannot say: read the types
                con.execute(sql("bias_input_create"))
                con.execute(sql("bias_input_from_audit_typed"), {**window, "group_path": json_path(group)})
    except duckdb.Error as e:
        raise ReportError(f"cannot read model_call events of {model!r}: {first_line(e)}") from None
    total = one(con, "SELECT count(*) FROM bias_input")[0]
    dropped = one(con, sql("bias_input_drop_missing"))[0]
    typed_apart = _keep_json_types_apart(con, _GROUPS)
    if total == 0:
        raise ReportError(f"no model_call decisions of model {model!r} between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC")
    if dropped == total:
        raise ReportError(f"no model_call of model {model!r} has a value at {group!r} (empty group)")
    labelled, outcome_labels, label_values = one(con, sql("bias_label_vocabulary"))
    has_label = outcome_labels > 0
    result = compute_bias(con, min_samples=min_samples, reference=reference, has_label=has_label, threshold=threshold)
    notes = list(result.notes)
    if dropped:
        notes.append(f"{dropped} call(s) without a value at {group} were left out")
    notes += typed_apart
    for stats in result.groups:  # "EU" and "EU<U+200B>" print alike and are counted apart
        why = disguise(stats.group)
        if why is not None:
            notes.append(f"group {ascii(stats.group)} {why}: it may be a group it looks like, counted apart")
    folded = {name_fold(p) for p in positives}
    otherwise = tuple(sorted(v for (v,) in con.execute("SELECT DISTINCT outcome_value FROM bias_input WHERE NOT pred")
                             .fetchall() if name_fold(v) in folded))
    if otherwise:  # "Approved" for "approved": such calls were counted as not selected
        notes.append("outcome(s) " + ", ".join(ascii(v) for v in otherwise) + " are a positive value written "
                     "differently (case, spaces, width or invisible characters): counted as not selected")
    if labelled and not has_label:
        shown = (label_values or "")[:80]
        notes.append(f"labels ({shown}) are never outcome values, so they are not ground truth for equalized odds")
    return replace(result, notes=tuple(notes), positives_spelled_otherwise=otherwise)


def drift_from_audit(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str,
    path: str,
    start: datetime,
    split: datetime,
    end: datetime,
    metric: str = "psi",
    period: str | None = None,
    use_facts: bool = True,
) -> DriftResult:
    """Drift of payload value ``path`` of ``model``'s calls: [start, split) against [split, end).

    With ``period`` (hour/day/week/month) the result also holds the PSI of each
    period of the current window against the whole reference window.
    """
    column = _facts_columns(con, json_path(path)) if use_facts else None

    left = {"reference": 0, "current": 0}  # calls without a value, per window (found in the same pass)

    def load(keep_text: bool, typed: bool = False) -> tuple[int, int]:
        con.execute(sql("drift_input_create"))
        params = {"model": model, "start": _naive_utc(start), "split": _naive_utc(split), "end": _naive_utc(end),
                  "with_ts": period is not None}
        try:
            with unordered_inserts(con):
                if typed:  # the text of every value and its JSON type, from the payloads (facts or not)
                    con.execute(sql("drift_input_from_audit_typed"), {**params, "path": json_path(path)})
                elif column is not None:
                    con.execute(sql("drift_input_from_facts").replace("{value}", column),
                                {**params, "keep_text": keep_text})
                else:
                    con.execute(sql("drift_input_from_audit"),
                                {**params, "keep_text": keep_text, "path": json_path(path)})
        except duckdb.Error as e:
            raise ReportError(f"cannot read model_call events of {model!r}: {first_line(e)}") from None
        left.update(reference=0, current=0)
        for (side,) in con.execute(sql("drift_input_drop_missing")).fetchall():
            left[side] += 1
        values, numeric = one(con, "SELECT count(*), count(num) FROM drift_input")
        return int(values), int(numeric)

    values, numeric = load(keep_text=metric == "chi2")
    if 0 < numeric < values and metric != "chi2":  # a mix of numbers and text: compare it all as text
        values, numeric = load(keep_text=True)
    kind = "numeric" if values and numeric == values and metric != "chi2" else "categorical"
    if metric == "ks" and kind != "numeric":
        raise ReportError(f"{path} of model {model!r} is not numeric: the KS statistic needs numbers")
    strings_left_out: list[str] = []
    if kind == "numeric" and _strings_possible(con, path, model, start, end, facts=column is not None):
        load(keep_text=True, typed=True)  # "1" reads as 1 but is a string: never count it as a number
        strings_left_out = _leave_out_strings(con, path, model)
    result = compute_drift(con, path, kind)  # type: ignore[arg-type]
    result = replace(result, notes=(*result.notes, *strings_left_out))
    categories = _Values("drift_input", "cat", "value", f" at {path}", "category", "categories", "drift")
    if kind == "categorical" and _could_be_typed(con, categories, among=[b.bin for b in result.bins]):
        load(keep_text=True, typed=True)  # 1 or "1"? the text cannot say: read the types, count again
        typed_apart = _keep_json_types_apart(con, categories)
        result = compute_drift(con, path, kind)  # type: ignore[arg-type]
        result = replace(result, notes=(*result.notes, *typed_apart))
    if any(left.values()):  # a value that stops being written is drift too: say how many calls had none
        result = replace(result, notes=(*result.notes, f"{left['reference']} reference and {left['current']} "
                                        f"current call(s) without a value at {path} were left out"))
    return psi_over_time(con, result, period) if period else result


# --- on demand, from a database file (``policyengine report bias|drift --db --model``) -------------


def bias_from_audit_db(
    db: str | Path, *, model: str, group: str, positive: str, since: datetime | None = None,
    until: datetime | None = None, min_samples: int = 0, reference: str | None = None,
    threshold: float = FOUR_FIFTHS,
) -> tuple[BiasResult, str]:
    """Bias of ``model`` in ``[since, until)`` (default: the 30 days up to now); also a source line."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=30)
    con = open_readonly(db)
    try:
        require_audit_log(con, db)
        result = bias_from_audit(con, model=model, group=group, positives=[positive], start=since, end=until,
                                 min_samples=min_samples, reference=reference, threshold=threshold)
    finally:
        con.close()
    return result, f"{db}: model_call events of {model}, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


def drift_from_audit_db(
    db: str | Path, *, model: str, paths: Sequence[str], until: datetime | None = None, baseline_days: int = 30,
    categorical: bool = False, period: str | None = "day",
) -> tuple[list[DriftResult], str, str]:
    """Drift of each payload path: the last ``baseline_days`` before ``until`` against the same span before."""
    until = until or datetime.now(UTC)
    span = timedelta(days=baseline_days)
    con = open_readonly(db)
    try:
        require_audit_log(con, db)
        try:
            results = [drift_from_audit(con, model=model, path=p, start=until - 2 * span, split=until - span,
                                        end=until, metric="chi2" if categorical else "psi", period=period)
                       for p in paths]
        except ReportError as e:
            if "the reference sample has no values" not in str(e):
                raise
            raise ReportError(
                f"{e}: no model_call of {model!r} between {until - 2 * span:%Y-%m-%d %H:%M} and "
                f"{until - span:%Y-%m-%d %H:%M} UTC to compare with; drift needs calls in two periods, so a log "
                f"as new as the demo's has none yet (choose --until and --baseline-days to span two periods "
                f"of calls, or compare CSV samples with --reference and --current)") from None
    finally:
        con.close()
    return (results, f"{db}: {model}, {until - 2 * span:%Y-%m-%d %H:%M} to {until - span:%Y-%m-%d %H:%M} UTC",
            f"{db}: {model}, {until - span:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC")
