"""Rendering of report results: table (terminal), csv, json and html.

The HTML is one self-contained file (inline CSS and inline SVG charts, no
scripts, no external fetches) so that an auditor can open it offline or attach
it to a finding as it is. JSON keeps full float precision; table and HTML show
six significant digits; an undefined metric is shown as "undefined", never NaN.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from html import escape
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from .bias import BiasResult
from .drift import DriftResult
from .provenance import Provenance
from .reports import ReportResult

Format = Literal["table", "csv", "json", "html"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "html")


# --- cells ---------------------------------------------------------------------------


def _json_value(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _parse_json(v: Any) -> Any:
    """A JSON column (DuckDB hands it over as text) as the value it holds."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return _json_value(v)


def cell(v: Any) -> str:
    """How one value reads in a table or an HTML cell."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    return str(v)


def metric(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.6g}"


def _console(file: io.StringIO) -> Console:
    # Tables take their natural width up to at least 200 columns: folding numbers
    # into two lines to fit a narrow terminal makes them unreadable.
    width = max(int(os.environ.get("COLUMNS") or 0), shutil.get_terminal_size((200, 24)).columns, 200)
    return Console(file=file, width=width, highlight=False, emoji=False, markup=False, color_system=None)


def _rich_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    t = Table(show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(cell(v) for v in r))
    out = io.StringIO()
    if title:  # a line of its own: as a table title rich wraps it to the table's width ("Ad-ho" / "c")
        out.write(title + "\n")
    _console(out).print(t)
    return out.getvalue()


# --- generic rows (named reports, query) ---------------------------------------------


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(...)`` in an actor id), prefixed with
    ``'`` so it shows as text (OWASP's advice on CSV injection); numbers and other text as they are."""
    if value.__class__ is str and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class csv_writer:  # noqa: N801 - used like csv.writer, which it wraps
    """``csv.writer`` whose text cells are ``spreadsheet_safe``: every CSV the reports write goes through it."""

    def __init__(self, out: Any) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row: Any) -> None:
        self._writer.writerow([spreadsheet_safe(v) for v in row])

    def writerows(self, rows: Any) -> None:
        for row in rows:
            self.writerow(row)


def render_rows(result: ReportResult, fmt: Format, provenance: Provenance | None = None) -> str:
    cols, rows = result.columns, result.rows
    if fmt == "json":
        is_json = [t == "JSON" for t in result.types] or [False] * len(cols)
        doc = [{c: (_parse_json(v) if j else _json_value(v)) for c, v, j in zip(cols, r, is_json)} for r in rows]
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        w = csv_writer(out)
        w.writerow(cols)
        w.writerows([("" if v is None else _json_value(v)) for v in r] for r in rows)
        return out.getvalue()
    if fmt == "html":
        spec = result.spec
        meta = [("Regulation", spec.regulation), ("Report", spec.name),
                ("Parameters", ", ".join(f"{k} = {cell(v) or 'null'}" for k, v in result.params.items()) or "none"),
                ("Rows", str(len(rows)))]
        body = (f"<p class='lead'>{escape(spec.description)}</p>" + _meta(meta) + _notes(result.notes)
                + _html_table(cols, rows))
        return page(spec.title, body, provenance)
    text = _rich_table(cols, rows, title=result.spec.title)
    return text + f"{len(rows)} row(s)\n" + "".join(f"note: {n}\n" for n in result.notes)


# --- bias ----------------------------------------------------------------------------------

_GROUP_COLS = ("group", "n", "judged", "selected", "selection_rate", "impact_ratio", "parity_difference",
               "tpr", "fpr", "tp", "fp", "tn", "fn")

_BIAS_SUMMARY = (
    ("disparate impact (min/max selection rate)", "disparate_impact"),
    ("demographic parity difference", "demographic_parity_difference"),
    ("demographic parity ratio", "demographic_parity_ratio"),
    ("equalized odds difference (worst case)", "equalized_odds_difference"),
    ("equalized odds ratio (worst case)", "equalized_odds_ratio"),
    ("TPR difference", "tpr_difference"),
    ("FPR difference", "fpr_difference"),
    ("TPR ratio", "tpr_ratio"),
    ("FPR ratio", "fpr_ratio"),
    ("overall selection rate", "overall_selection_rate"),
)


def _group_rows(r: BiasResult) -> list[tuple[Any, ...]]:
    label_cols = r.has_label
    rows = []
    for g in r.groups:
        row = [g.group, g.n, g.judged, g.selected, g.selection_rate, g.impact_ratio, g.parity_difference]
        row += [g.tpr, g.fpr, g.tp, g.fp, g.tn, g.fn] if label_cols else [None] * 6
        rows.append(tuple(row))
    return rows


def _group_cols(r: BiasResult) -> tuple[str, ...]:
    return _GROUP_COLS if r.has_label else _GROUP_COLS[:7]


def render_bias(r: BiasResult, fmt: Format, *, source: str = "", provenance: Provenance | None = None) -> str:
    if fmt == "json":
        return json.dumps(_json_value(r.to_dict()), indent=2) + "\n"
    cols = _group_cols(r)
    rows = [row[: len(cols)] for row in _group_rows(r)]
    summary = [(label, getattr(r, key)) for label, key in _BIAS_SUMMARY
               if r.has_label or not key.startswith(("equalized", "tpr", "fpr"))]
    if fmt == "csv":
        out = io.StringIO()
        w = csv_writer(out)
        w.writerow(cols)
        w.writerows([("" if v is None else v) for v in row] for row in rows)
        return out.getvalue()
    if fmt == "html":
        return _bias_html(r, cols, rows, summary, source, provenance)
    text = _rich_table(cols, rows, title=f"Bias by group (reference: {r.reference_group or 'none'}, "
                                            f"min samples: {r.min_samples})")
    text += _rich_table(("metric", "value"), [(k, metric(v)) for k, v in summary], title="Aggregates over judged groups")
    if r.flagged_groups:
        text += f"below the {r.threshold:g} impact-ratio line: {', '.join(r.flagged_groups)}\n"
    text += "".join(f"note: {n}\n" for n in r.notes)
    return text


def _bias_html(r: BiasResult, cols, rows, summary, source: str, provenance: Provenance | None) -> str:
    ref = next((g for g in r.groups if g.group == r.reference_group), None)
    line = r.threshold * ref.selection_rate if ref is not None else None
    bars = [(g.group, g.selection_rate,
             "muted" if not g.judged else ("bad" if g.group in r.flagged_groups else "ok")) for g in r.groups]
    chart = bar_chart(
        bars, title="Selection rate by group",
        line=line, line_label=(f"{r.threshold:g} × reference rate ({r.reference_group})" if line is not None else None),
        max_value=1.0,
    )
    verdict = ("<p class='bad'>Below the " + escape(f"{r.threshold:g}") + " line: " + escape(", ".join(r.flagged_groups)) + "</p>"
               if r.flagged_groups else "<p class='ok'>No judged group is below the "
               + escape(f"{r.threshold:g}") + " line.</p>")
    meta = [("Source", source or "—"), ("Rows", str(r.total_rows)), ("Reference group", r.reference_group or "none"),
            ("Min samples", str(r.min_samples)), ("Judged groups", str(r.judged_groups))]
    body = (
        "<p class='lead'>Selection rates, disparate impact, demographic parity"
        + (" and equalized odds" if r.has_label else "")
        + " per protected group. Definitions follow fairlearn and AIF360 (docs/reports.md).</p>"
        + _meta(meta) + verdict + chart
        + "<h2>Aggregates over judged groups</h2>" + _html_table(("metric", "value"), [(k, metric(v)) for k, v in summary])
        + "<h2>Groups</h2>" + _html_table(cols, rows)
        + _notes(r.notes)
    )
    return page("Bias report", body, provenance)


# --- drift -------------------------------------------------------------------------------------

_BIN_COLS = ("bin", "lower_edge", "upper_edge", "ref_count", "cur_count", "ref_pct", "cur_pct", "psi_term")


def _psi_band(psi: float) -> str:
    return "ok" if psi < 0.1 else ("warn" if psi < 0.2 else "bad")


def render_drift(results: Sequence[DriftResult], fmt: Format, *, reference: str = "", current: str = "",
                 provenance: Provenance | None = None) -> str:
    if fmt == "json":
        doc = {"reference": reference, "current": current, "columns": [r.to_dict() for r in results]}
        return json.dumps(_json_value(doc), indent=2) + "\n"
    summary_cols = ("column", "kind", "n_reference", "n_current", "psi", "ks_statistic", "chi2_statistic",
                    "chi2_dof", "chi2_pvalue")
    summary = [
        (r.column, r.kind, r.n_reference, r.n_current, r.psi,
         r.ks.statistic if r.ks else None,
         r.chi2.statistic if r.chi2 else None, r.chi2.dof if r.chi2 else None, r.chi2.pvalue if r.chi2 else None)
        for r in results
    ]
    if fmt == "csv":
        out = io.StringIO()
        w = csv_writer(out)
        w.writerow(("column", *_BIN_COLS))
        for r in results:
            for b in r.bins:
                w.writerow([r.column, *(("" if getattr(b, c) is None else getattr(b, c)) for c in _BIN_COLS)])
        return out.getvalue()
    if fmt == "html":
        return _drift_html(results, summary_cols, summary, reference, current, provenance)
    text = _rich_table(summary_cols, summary, title="Drift (PSI < 0.1 stable, 0.1-0.2 moderate, >= 0.2 significant)")
    for r in results:
        text += _rich_table(_BIN_COLS, [tuple(getattr(b, c) for c in _BIN_COLS) for b in r.bins],
                            title=f"PSI bins of {r.column}")
        if r.over_time:
            text += _rich_table(("period", "n_current", "psi"),
                                [(p.period, p.n_current, p.psi) for p in r.over_time], title=f"PSI over time of {r.column}")
        text += "".join(f"note: {r.column}: {n}\n" for n in r.notes)
    return text


def _drift_html(results, summary_cols, summary, reference: str, current: str,
                provenance: Provenance | None) -> str:
    psi_chart = bar_chart([(r.column, r.psi, _psi_band(r.psi)) for r in results], title="PSI per column",
                          line=0.2, line_label="0.2 significant shift", max_value=max(0.3, *(r.psi for r in results)))
    parts = []
    for r in results:
        parts.append(f"<h2>{escape(r.column)} <span class='tag {_psi_band(r.psi)}'>PSI {r.psi:.4g}</span></h2>")
        if r.over_time:
            parts.append(line_chart([(f"{p.period:%Y-%m-%d}", p.psi) for p in r.over_time],
                                    title=f"PSI over time of {r.column} (each period vs the baseline)",
                                    line=0.2, line_label="0.2 significant shift"))
        parts.append(paired_bar_chart([b.bin for b in r.bins], [b.ref_pct for b in r.bins], [b.cur_pct for b in r.bins],
                                      title=f"Share per bin of {r.column}: reference vs current"))
        parts.append(_html_table(_BIN_COLS, [tuple(getattr(b, c) for c in _BIN_COLS) for b in r.bins]))
        parts.append(_notes(r.notes))
    body = (
        "<p class='lead'>Population Stability Index (10 reference-decile bins, or one bin per category), "
        "two-sample Kolmogorov-Smirnov statistic and chi-squared test between a reference and a current sample. "
        "Definitions in docs/reports.md.</p>"
        + _meta([("Reference", reference or "—"), ("Current", current or "—")])
        + psi_chart + "<h2>Summary</h2>" + _html_table(summary_cols, summary) + "".join(parts)
    )
    return page("Drift report", body, provenance)


# --- HTML building blocks -------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:24px auto;max-width:1760px;padding:0 24px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.lead{color:#52606d;margin:4px 0 16px}.stamp{color:#7b8794;font-size:12px}.serves{color:#52606d;font-size:12px;margin:0 0 4px}
table{border-collapse:collapse;width:100%;margin:8px 0 16px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
.w{overflow-wrap:anywhere}
th{background:#f5f7fa;font-weight:600}tr:nth-child(even) td{background:#fbfcfd}
dl.meta{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 16px;margin:8px 0 16px}dl.meta dt{color:#7b8794}dl.meta dd{margin:0;overflow-wrap:anywhere}
.ok{color:#1f7a4d}.warn{color:#b7791f}.bad{color:#c53030}.tag{font-size:12px;padding:1px 6px;border-radius:8px;background:#f0f4f8}
.provenance{border:1px solid #d9e2ec;border-left:5px solid #9aa5b1;border-radius:4px;padding:6px 12px;margin:8px 0 16px;overflow-wrap:anywhere}
.provenance p{margin:2px 0}.provenance.ok{border-left-color:#1f7a4d}.provenance.bad{border-left-color:#c53030;background:#fff5f5}
.provenance.warn{border-left-color:#b7791f;background:#fffbea}.provenance .ok,.provenance .warn,.provenance .bad{font-weight:600}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.notes li{color:#52606d}svg{display:block;margin:8px 0 16px;max-width:100%;height:auto}
@media print{
@page{size:A4 landscape;margin:12mm}
body{margin:0;max-width:none;padding:0;font-size:10px}h1{font-size:18px}h2{font-size:13px;margin:16px 0 4px;break-after:avoid}
table{font-size:9px;margin:4px 0 10px}th,td{padding:2px 4px}thead{display:table-header-group}tr{break-inside:avoid}
tr:nth-child(even) td{background:none}svg,.provenance,dl.meta{break-inside:avoid}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""

_FILL = {"ok": "#3b82c4", "bad": "#d64545", "warn": "#e0a030", "muted": "#b8c2cc"}


def page(title: str, body: str, provenance: Provenance | None = None) -> str:
    """One self-contained HTML page; ``provenance`` (which log, and whether it verified) opens it."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class='stamp'>Generated by policyengine on {stamp}</p>"
        f"{provenance.html() if provenance is not None else ''}"
        f"{body}</body></html>\n"
    )


def _meta(items: Sequence[tuple[str, str]]) -> str:
    return "<dl class='meta'>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return "<ul class='notes'>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"


_BREAK_AFTER = re.compile(r"([/._,=:+-])(?=[^/._,=:+\s-])")


def _wrapping(text: str) -> str:
    """An escaped cell that may break after ``/ . _ , = -`` inside long tokens (paths, rule ids, run ids),
    so a column of them can be narrow without cutting words in the middle; a token with no such place
    (a hash) is marked to break anywhere."""
    out = []
    for token in re.split(r"(\s+)", text):
        if len(token) <= 10 or token.isspace():
            out.append(escape(token))
            continue
        parts = _BREAK_AFTER.sub("\\1\0", token).split("\0")
        cls = "<span class='w'>{}</span>" if any(len(p) > 16 for p in parts) else "{}"
        out.append(cls.format("<wbr>".join(escape(p) for p in parts)))
    return "".join(out)


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{'_<wbr>'.join(escape(w) for w in str(c).split('_'))}</th>" for c in columns)  # latency_<wbr>seconds
    body = "".join("<tr>" + "".join(f"<td>{_wrapping(cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    if not rows:
        body = f"<tr><td colspan='{max(len(columns), 1)}'>no rows</td></tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_WIDTH, _LEFT, _RIGHT, _TOP, _BOTTOM = 760, 56, 16, 30, 40  # every chart's width and margins (px)
_PLOT_W = _WIDTH - _LEFT - _RIGHT


def _chart_frame(title: str, height: int, top_value: float,
                 legend: str = "") -> tuple[list[str], Callable[[float], float], int]:
    """What every chart starts with: the ``<svg>`` element, its title (and ``legend``) and five grid
    lines over a plot area scaled from 0 to ``top_value``. Returns the SVG so far, the value-to-y
    scale and the plot area's height."""
    plot_h = height - _TOP - _BOTTOM

    def y(v: float) -> float:
        return _TOP + plot_h - (v / top_value) * plot_h

    out = [(f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}' role='img' "
           f"aria-label='{escape(title)}' viewBox='0 0 {_WIDTH} {height}'>"),
           f"<text x='{_LEFT}' y='18' font-size='14' font-weight='600' fill='#1f2933'>{escape(title)}</text>"]
    if legend:
        out.append(legend)
    for i in range(5):
        v = top_value * i / 4
        out.append(f"<line x1='{_LEFT}' x2='{_LEFT + _PLOT_W}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#e4e7eb'/>")
        out.append(f"<text x='{_LEFT - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end' fill='#7b8794'>{v:.2g}</text>")
    return out, y, plot_h


def _threshold_line(y: Callable[[float], float], line: float) -> str:
    return (f"<line x1='{_LEFT}' x2='{_LEFT + _PLOT_W}' y1='{y(line):.1f}' y2='{y(line):.1f}' stroke='#c53030' "
            "stroke-width='2' stroke-dasharray='6 4'/>")


def bar_chart(bars: Sequence[tuple[str, float, str]], *, title: str, line: float | None = None,
              line_label: str | None = None, max_value: float = 1.0) -> str:
    """Vertical bars (label, value, tone) with an optional dashed threshold line."""
    height = 280
    top_value = max(max_value, *(v for _, v, _ in bars), line or 0.0, 1e-12)
    out, y, plot_h = _chart_frame(title, height, top_value)
    slot = _PLOT_W / max(len(bars), 1)
    bar_w = min(64.0, slot * 0.6)
    for i, (label, value, tone) in enumerate(bars):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        out.append(f"<rect x='{x:.1f}' y='{y(value):.1f}' width='{bar_w:.1f}' height='{_TOP + plot_h - y(value):.1f}' "
                   f"fill='{_FILL.get(tone, _FILL['ok'])}'><title>{escape(label)}: {value:.6g}</title></rect>")
        out.append(f"<text x='{x + bar_w / 2:.1f}' y='{y(value) - 4:.1f}' font-size='11' text-anchor='middle' "
                   f"fill='#1f2933'>{value:.3g}</text>")
        out.append(f"<text x='{x + bar_w / 2:.1f}' y='{height - _BOTTOM + 16}' font-size='12' text-anchor='middle' "
                   f"fill='#1f2933'>{escape(label[:18])}</text>")
    if line is not None:
        out.append(_threshold_line(y, line))
        if line_label:  # as a legend in the title row, so it never covers a bar's value
            lx = _LEFT + _PLOT_W - 8 - 6.2 * len(line_label)
            out.append(f"<line x1='{lx - 30:.1f}' x2='{lx - 6:.1f}' y1='14' y2='14' stroke='#c53030' stroke-width='2' "
                       "stroke-dasharray='6 4'/>")
            out.append(f"<text x='{_LEFT + _PLOT_W}' y='18' font-size='11' text-anchor='end' "
                       f"fill='#c53030'>{escape(line_label)}</text>")
    out.append(f"<line x1='{_LEFT}' x2='{_LEFT}' y1='{_TOP}' y2='{_TOP + plot_h}' stroke='#9aa5b1'/>")
    out.append("</svg>")
    return "".join(out)


def paired_bar_chart(labels: Sequence[str], ref: Sequence[float], cur: Sequence[float], *, title: str) -> str:
    """Reference and current share side by side for each bin."""
    height = 260
    legend = (f"<rect x='{_WIDTH - 190}' y='8' width='10' height='10' fill='#9aa5b1'/>"
              f"<text x='{_WIDTH - 176}' y='17' font-size='11'>reference</text>"
              f"<rect x='{_WIDTH - 110}' y='8' width='10' height='10' fill='#3b82c4'/>"
              f"<text x='{_WIDTH - 96}' y='17' font-size='11'>current</text>")
    out, y, plot_h = _chart_frame(title, height, max(0.05, *ref, *cur), legend)
    slot = _PLOT_W / max(len(labels), 1)
    bw = min(28.0, slot * 0.38)
    for i, label in enumerate(labels):
        x0 = _LEFT + slot * i + slot / 2 - bw
        for j, (v, fill) in enumerate(((ref[i], "#9aa5b1"), (cur[i], "#3b82c4"))):
            x = x0 + j * bw
            out.append(f"<rect x='{x:.1f}' y='{y(v):.1f}' width='{bw - 2:.1f}' height='{_TOP + plot_h - y(v):.1f}' "
                       f"fill='{fill}'><title>{escape(label)}: {v:.4g}</title></rect>")
        out.append(f"<text x='{_LEFT + slot * i + slot / 2:.1f}' y='{height - _BOTTOM + 16}' font-size='11' "
                   f"text-anchor='middle' fill='#1f2933'>{escape(label[:12])}</text>")
    out.append("</svg>")
    return "".join(out)


def line_chart(points: Sequence[tuple[str, float]], *, title: str, line: float | None = None,
               line_label: str | None = None) -> str:
    """A value per period joined by a line, with an optional dashed threshold line."""
    height = 260
    out, y, _ = _chart_frame(title, height, max(line or 0.0, *(v for _, v in points), 1e-12) * 1.1)
    step = _PLOT_W / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return _LEFT + (i * step if len(points) > 1 else _PLOT_W / 2)

    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    out.append(f"<path d='{path}' fill='none' stroke='#3b82c4' stroke-width='2'/>")
    every = max(1, len(points) // 8)
    for i, (label, v) in enumerate(points):
        tone = _FILL["bad"] if line is not None and v >= line else _FILL["ok"]
        out.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='3.5' fill='{tone}'><title>{escape(label)}: {v:.4g}</title></circle>")
        if i % every == 0:
            out.append(f"<text x='{x(i):.1f}' y='{height - _BOTTOM + 16}' font-size='11' text-anchor='middle' "
                       f"fill='#1f2933'>{escape(label)}</text>")
    if line is not None:
        out.append(_threshold_line(y, line))
        if line_label:
            out.append(f"<text x='{_LEFT + _PLOT_W}' y='18' font-size='11' text-anchor='end' fill='#c53030'>"
                       f"{escape(line_label)}</text>")
    out.append("</svg>")
    return "".join(out)
