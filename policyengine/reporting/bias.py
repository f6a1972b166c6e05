"""Bias metrics over decisions, computed in SQL inside DuckDB.

Every source (a CSV a model-risk team supplies, or the audit log's ``model_call``
events) is first turned into one table, ``bias_input(line, grp, pred, label)``;
the metrics are then the same SQL (``sql/bias_groups.sql``, ``sql/bias_summary.sql``)
whatever the source, which is what lets the offline numbers be compared with
fairlearn's and trusted for the monitor. Definitions are in ``docs/reports.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from ..identity import name_fold
from .db import first_line, load_csv, memory, one, sql
from .errors import ReportError
from .thresholds import holds

FOUR_FIFTHS = 0.8


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One protected group: its counts, rates and comparison with the reference group."""

    group: str
    n: int
    selected: int
    selection_rate: float
    labelled: int
    tp: int
    fn: int
    fp: int
    tn: int
    tpr: float  # 0.0 when the group has no labelled positives (fairlearn)
    fpr: float  # 0.0 when the group has no labelled negatives (fairlearn)
    judged: bool  # False when n < min_samples: reported, not judged
    impact_ratio: float | None  # selection_rate / reference rate; None if that rate is 0
    parity_difference: float | None  # selection_rate - reference rate


@dataclass(frozen=True, slots=True)
class BiasResult:
    """Group table plus the aggregate metrics over the judged groups.

    A metric is ``None`` when it is undefined; ``notes`` says why, in words an
    auditor can file (never a silent NaN).
    """

    groups: tuple[GroupStats, ...]
    min_samples: int
    reference_group: str | None
    has_label: bool
    total_rows: int
    judged_groups: int
    overall_selection_rate: float | None
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    disparate_impact: float | None  # min/max selection rate over judged groups (= DP ratio)
    tpr_difference: float | None
    fpr_difference: float | None
    tpr_ratio: float | None
    fpr_ratio: float | None
    equalized_odds_difference: float | None
    equalized_odds_ratio: float | None
    threshold: float
    flagged_groups: tuple[str, ...]  # judged groups whose impact ratio is below threshold
    notes: tuple[str, ...]
    # outcomes (audit log) that are a positive value written differently ("Approved" for "approved"): not selected
    positives_spelled_otherwise: tuple[str, ...] = ()

    def metric(self, name: str) -> float | None:
        """The value a ``bias`` rule's ``metric`` names (disparate_impact, demographic_parity, ...)."""
        aliases = {
            "disparate_impact": self.disparate_impact,
            "demographic_parity": self.demographic_parity_difference,
            "demographic_parity_difference": self.demographic_parity_difference,
            "demographic_parity_ratio": self.demographic_parity_ratio,
            "equalized_odds": self.equalized_odds_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
            "equalized_odds_ratio": self.equalized_odds_ratio,
        }
        if name not in aliases:
            raise ReportError(f"unknown bias metric {name!r} (known: {', '.join(sorted(aliases))})")
        return aliases[name]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = [asdict(g) for g in self.groups]
        d["flagged_groups"] = list(self.flagged_groups)
        d["notes"] = list(self.notes)
        d["positives_spelled_otherwise"] = list(self.positives_spelled_otherwise)
        return d


def spelled_alike(groups: Sequence[str]) -> list[tuple[str, ...]]:
    """Groups that are one name written differently (case, spaces, full width, invisible characters, dashes).

    Counted apart, one group's calls are split between its spellings: a part under
    min samples is not judged, and each part's rate is not the group's.
    """
    by_fold: dict[str, list[str]] = {}
    for g in groups:
        by_fold.setdefault(name_fold(g), []).append(g)
    return [tuple(names) for names in by_fold.values() if len(names) > 1]


def compute_bias(
    con: duckdb.DuckDBPyConnection,
    *,
    min_samples: int = 0,
    reference: str | None = None,
    has_label: bool = False,
    threshold: float = FOUR_FIFTHS,
) -> BiasResult:
    """Compute every bias metric from the temp table ``bias_input`` already filled on ``con``."""
    if min_samples < 0:
        raise ReportError(f"--min-samples must be 0 or more, got {min_samples}")
    total = one(con, "SELECT count(*) FROM bias_input")[0]
    if total == 0:
        raise ReportError("no decisions to measure: the input has no rows")
    if reference is not None:
        known = one(con, "SELECT count(*) FROM bias_input WHERE grp = $g", {"g": reference})[0]
        if known == 0:
            raise ReportError(f"reference group {reference!r} has no rows (empty group)")
    con.execute(sql("bias_groups"), {"min_samples": min_samples, "reference": reference})
    cur = con.execute("SELECT * FROM bias_groups ORDER BY grp")
    names = [c[0] for c in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    groups = tuple(
        GroupStats(
            group=r["grp"], n=r["n"], selected=r["selected"], selection_rate=r["selection_rate"],
            labelled=r["labelled"], tp=r["tp"], fn=r["fn"], fp=r["fp"], tn=r["tn"],
            tpr=r["tpr"], fpr=r["fpr"], judged=bool(r["judged"]),
            impact_ratio=r["impact_ratio"], parity_difference=r["parity_difference"],
        )
        for r in rows
    )
    cur = con.execute(sql("bias_summary"))
    row = cur.fetchone()
    if row is None:
        raise ReportError("internal error: the bias summary returned no row")
    s = dict(zip([c[0] for c in cur.description], row))
    ref_group = rows[0]["reference_group"] if rows else None
    notes: list[str] = []
    unjudged = [g.group for g in groups if not g.judged]
    if unjudged:
        notes.append(
            f"{len(unjudged)} group(s) under min samples {min_samples} are reported, not judged: "
            + ", ".join(unjudged[:10])
        )
    judged = s["judged_groups"] or 0
    if judged == 0:
        notes.append(f"no group has at least {min_samples} rows: nothing is judged")
        s = {k: None for k in s}
    elif judged == 1:
        notes.append("only one group is judged: differences are 0 and ratios 1 by definition")
    if judged and s["demographic_parity_ratio"] is None:
        notes.append("disparate impact / demographic parity ratio undefined: every judged group's selection rate is 0")
    if ref_group is not None and any(g.impact_ratio is None for g in groups):
        notes.append(f"impact ratios undefined: the reference group {ref_group!r} has selection rate 0")
    label_keys = ("tpr_difference", "fpr_difference", "tpr_ratio", "fpr_ratio",
                  "equalized_odds_difference", "equalized_odds_ratio")
    if not has_label:
        s.update({k: None for k in label_keys})
        notes.append("no ground-truth label: equalized odds not computed")
    elif judged:
        if s["tpr_ratio"] is None and s["fpr_ratio"] is None:
            notes.append("equalized odds ratio undefined: every judged group's TPR and FPR are 0")
        elif s["tpr_ratio"] is None:
            notes.append("TPR ratio undefined (every judged group's TPR is 0): equalized odds ratio is the FPR ratio")
        elif s["fpr_ratio"] is None:
            notes.append("FPR ratio undefined (every judged group's FPR is 0): equalized odds ratio is the TPR ratio")
    for names in spelled_alike([g.group for g in groups]):
        notes.append("groups " + ", ".join(ascii(n) for n in names) + " are one name written differently "
                     "(case, spaces, width or invisible characters): counted apart")
    flagged = tuple(
        g.group for g in groups if g.judged and g.impact_ratio is not None and not holds(g.impact_ratio, ">=", threshold)
    )
    return BiasResult(
        groups=groups,
        min_samples=min_samples,
        reference_group=ref_group,
        has_label=has_label,
        total_rows=total,
        judged_groups=judged,
        overall_selection_rate=s["overall_selection_rate"],
        demographic_parity_difference=s["demographic_parity_difference"],
        demographic_parity_ratio=s["demographic_parity_ratio"],
        disparate_impact=s["demographic_parity_ratio"],
        tpr_difference=s["tpr_difference"],
        fpr_difference=s["fpr_difference"],
        tpr_ratio=s["tpr_ratio"],
        fpr_ratio=s["fpr_ratio"],
        equalized_odds_difference=s["equalized_odds_difference"],
        equalized_odds_ratio=s["equalized_odds_ratio"],
        threshold=threshold,
        flagged_groups=flagged,
        notes=tuple(notes),
    )


def bias_from_csv(
    path: str | Path,
    *,
    outcome: str,
    positive: str,
    group: str,
    label: str | None = None,
    label_positive: str | None = None,
    reference: str | None = None,
    min_samples: int = 0,
    threshold: float = FOUR_FIFTHS,
) -> BiasResult:
    """Offline bias report on a CSV of decisions (one row per decision)."""
    con = memory()
    try:
        table = load_csv(con, path)
        table.require(group, "--group")
        table.require(outcome, "--outcome")
        if label is not None:
            table.require(label, "--label")
        con.execute(sql("bias_input_create"))
        try:
            con.execute(
                sql("bias_input_from_csv"),
                {
                    "group": group, "outcome": outcome, "label": label or outcome,
                    "positive": positive.strip(),
                    "label_positive": (label_positive if label_positive is not None else positive).strip(),
                    "has_label": label is not None,
                },
            )
        except duckdb.Error as e:
            raise ReportError(f"{path}: cannot read the decision columns ({first_line(e)})") from None
        chk = one(con, sql("bias_input_check"), {"has_label": label is not None})
        empty_groups, first_group, empty_out, first_out, empty_lab, first_lab, selected, _total = chk
        if empty_groups:
            raise ReportError(f"{path}:{first_group}: empty group in column {group!r} ({empty_groups} row(s) have none)")
        if empty_out:
            raise ReportError(f"{path}:{first_out}: empty outcome in column {outcome!r} ({empty_out} row(s) have none)")
        if empty_lab:
            raise ReportError(f"{path}:{first_lab}: empty label in column {label!r} ({empty_lab} row(s) have none)")
        result = compute_bias(con, min_samples=min_samples, reference=reference,
                              has_label=label is not None, threshold=threshold)
        if selected == 0:
            note = f"no row has {outcome} = {positive!r}: every selection rate is 0 (check --positive)"
            result = replace(result, notes=(*result.notes, note))
        return result
    finally:
        con.close()

