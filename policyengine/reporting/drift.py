"""Drift metrics between a reference and a current sample, computed in SQL.

Like bias, every source is first turned into one table,
``drift_input(side, line, num, cat)``; PSI, the two-sample KS statistic and the
chi-squared test are then the same SQL (``sql/drift_*.sql``) for a pair of CSVs
and for two windows of the audit log. A column is numeric when every value is a
number, categorical when none is; a column that mixes both is refused unless
the caller says which it is. Compared as numbers, a value that reads as one but
is not written as one (a CSV cell ``nan`` or ``" 1"``, a JSON string ``"1"``) is left
out, with a note. Definitions are in ``docs/reports.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from .db import ColumnProfile, first_line, load_csv, memory, one, profile, sql
from .errors import ReportError
from .stats import chi2_sf

Kind = Literal["auto", "numeric", "categorical"]
N_BINS = 10
EPSILON = 1e-4


@dataclass(frozen=True, slots=True)
class PsiBin:
    bin: str  # "bin_0".. for numeric columns, the category for categorical ones
    lower_edge: float | None  # inclusive; None for the first bin and for categories
    upper_edge: float | None  # exclusive; None for the last bin and for categories
    ref_count: int
    cur_count: int
    ref_pct: float
    cur_pct: float
    ref_pct_eps: float
    cur_pct_eps: float
    psi_term: float


@dataclass(frozen=True, slots=True)
class KsResult:
    statistic: float
    location: float  # the value at which the CDFs are furthest apart
    sign: int  # +1: the reference CDF is above (current values larger); -1 otherwise


@dataclass(frozen=True, slots=True)
class Chi2Result:
    statistic: float
    dof: int
    pvalue: float


@dataclass(frozen=True, slots=True)
class PsiPoint:
    """PSI of one period of the current sample against the whole reference."""

    period: datetime
    n_current: int
    psi: float


@dataclass(frozen=True, slots=True)
class DriftResult:
    """PSI for any column; KS for numeric ones; chi-squared for categorical ones."""

    column: str
    kind: Literal["numeric", "categorical"]
    n_reference: int
    n_current: int
    psi: float
    bins: tuple[PsiBin, ...]
    ks: KsResult | None
    chi2: Chi2Result | None
    notes: tuple[str, ...] = ()
    over_time: tuple[PsiPoint, ...] = ()  # audit-log sources only, when a period is asked for

    def metric(self, name: str) -> float | None:
        """The value a ``drift`` rule's ``metric`` names (psi, ks, chi2)."""
        if name == "psi":
            return self.psi
        if name == "ks":
            return self.ks.statistic if self.ks else None
        if name == "chi2":
            return self.chi2.statistic if self.chi2 else None
        raise ReportError(f"unknown drift metric {name!r} (known: chi2, ks, psi)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bins"] = [asdict(b) for b in self.bins]
        d["notes"] = list(self.notes)
        d["over_time"] = [asdict(p) for p in self.over_time]
        return d


def compute_drift(
    con: duckdb.DuckDBPyConnection, column: str, kind: Literal["numeric", "categorical"]
) -> DriftResult:
    """Compute drift metrics from the temp table ``drift_input`` already filled on ``con``."""
    n_ref, n_cur = one(con, 
        "SELECT count(*) FILTER (WHERE side = 'reference'), count(*) FILTER (WHERE side = 'current') "
        "FROM drift_input"
    )
    if n_ref == 0:
        raise ReportError(f"column {column!r}: the reference sample has no values")
    if n_cur == 0:
        raise ReportError(f"column {column!r}: the current sample has no values")
    if kind == "numeric":
        probs = [i / N_BINS for i in range(1, N_BINS)]
        cur = con.execute(sql("drift_psi_numeric"), {"probs": probs, "n_bins": N_BINS, "epsilon": EPSILON})
    else:
        cur = con.execute(sql("drift_psi_categorical"), {"epsilon": EPSILON})
    bins = tuple(PsiBin(*row) for row in cur.fetchall())
    psi = float(sum(b.psi_term for b in bins))
    ks = chi2 = None
    if kind == "numeric":
        statistic, location, sign, _, _ = one(con, sql("drift_ks"))
        ks = KsResult(float(statistic), float(location), int(sign))
    else:
        statistic, dof = one(con, sql("drift_chi2"))
        chi2 = Chi2Result(float(statistic), int(dof), chi2_sf(float(statistic), int(dof)))
    notes = []
    empty_ref = sum(1 for b in bins if b.ref_count == 0)
    empty_cur = sum(1 for b in bins if b.cur_count == 0)
    if empty_ref or empty_cur:
        notes.append(
            f"{empty_ref} reference and {empty_cur} current bin(s) are empty; their shares count as {EPSILON:g}"
        )
    return DriftResult(column, kind, n_ref, n_cur, psi, bins, ks, chi2, tuple(notes))


def leave_out_non_numbers(
    con: duckdb.DuckDBPyConnection, *, counted: str, numbers: str, refused: Callable[[list[str]], str], hint: str
) -> list[str]:
    """Take out of a numeric comparison the values ``drift_input`` marks as no number (``cat_type`` VARCHAR).

    They read as numbers ("1", nan) but are not, so they are never counted as such: a note says how many per
    side and names up to three (``counted``: what they are, ``numbers``: what is counted). A side left with no
    number is refused (it would otherwise read as "no values"): ``refused(sides)`` names it, ``hint`` the way out.
    """
    ref, cur, ref_numbers, cur_numbers, shown = one(con, sql("drift_input_strings"))
    if not ref and not cur:
        return []
    texts = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")
    said = f"{ref} reference and {cur} current {counted} ({texts})"
    bare = [side for side, strings, numbers_left in (("reference", ref, ref_numbers), ("current", cur, cur_numbers))
            if strings and not numbers_left]
    if bare:
        raise ReportError(f"{refused(bare)} ({said}): numeric drift counts {numbers} only, so drift is not computed "
                          f"({hint})")
    con.execute("DELETE FROM drift_input WHERE cat_type = 'VARCHAR'")
    return [f"{said} were left out: numeric drift counts {numbers} only"]


def psi_over_time(con: duckdb.DuckDBPyConnection, result: DriftResult, period: str) -> DriftResult:
    """``result`` with the PSI of each ``period`` (hour/day/week/month) of the current sample."""
    if period not in ("hour", "day", "week", "month"):
        raise ReportError(f"period must be hour, day, week or month, not {period!r}")
    rows = con.execute(sql("drift_psi_by_period"), {
        "probs": [i / N_BINS for i in range(1, N_BINS)], "n_bins": N_BINS, "epsilon": EPSILON,
        "period": period, "numeric": result.kind == "numeric",
    }).fetchall()
    return replace(result, over_time=tuple(PsiPoint(p, int(n), float(v)) for p, n, v in rows if p is not None))


def _decide_kind(path: str, p: ColumnProfile, kind: Kind) -> Literal["numeric", "categorical", "mixed"]:
    if p.kind == "empty":
        raise ReportError(f"{path}: column {p.name!r} has no values")
    if kind == "categorical":
        return "categorical"
    if kind == "numeric" and p.kind != "numeric":
        raise ReportError(
            f"{path}:{p.first_text_line}: column {p.name!r} is not numeric: {p.first_text!r}"
        )
    return p.kind  # type: ignore[return-value]


def drift_from_csv(
    reference: str | Path, current: str | Path, column: str, *, kind: Kind = "auto"
) -> DriftResult:
    """Offline drift report of one column between two CSV files."""
    con = memory()
    try:
        con.execute(sql("drift_input_create"))
        kinds: list[str] = []
        for side, path in (("reference", reference), ("current", current)):
            table = load_csv(con, path)
            table.require(column, "--column")
            prof = profile(con, table, column)
            decided = _decide_kind(str(path), prof, kind)
            if decided == "mixed":
                raise ReportError(
                    f"{path}:{prof.first_text_line}: column {column!r} mixes numbers and text "
                    f"(first text value {prof.first_text!r}); fix the data or pass --categorical"
                )
            kinds.append(decided)
            try:
                con.execute(sql("drift_input_from_csv"),
                            {"side": side, "column": column, "numbers": decided == "numeric"})
            except duckdb.Error as e:
                raise ReportError(f"{path}: cannot read column {column!r} ({first_line(e)})") from None
        if kinds[0] != kinds[1]:
            raise ReportError(
                f"column {column!r} is {kinds[0]} in {reference} but {kinds[1]} in {current}; "
                "pass --categorical to compare them as categories"
            )
        left_out: list[str] = []
        if kinds[0] == "numeric":  # nan, inf, " 1", 1_000 read as numbers but are not written as one
            files = {"reference": reference, "current": current}
            left_out = leave_out_non_numbers(
                con, counted="cell(s) not written as a plain decimal number", numbers="plain decimal numbers",
                refused=lambda sides: f"column {column!r} has no plain decimal number in the "
                + " or ".join(f"{side} file {files[side]}" for side in sides),
                hint="--categorical compares the values as categories")
        result = compute_drift(con, column, kinds[0])  # type: ignore[arg-type]
        return replace(result, notes=(*result.notes, *left_out))
    finally:
        con.close()
