"""How a replay reads: a terminal summary, the CSV of every change, and an HTML diff page."""

from __future__ import annotations

import io

from ..replay import COLUMNS, ReplayResult
from .provenance import Provenance
from .render import _html_table, _meta, _rich_table, csv_writer, page

HTML_ROWS = 500  # changes listed in the HTML page; the CSV has every one


def _when(r: ReplayResult) -> str:
    since = r.since.isoformat() if r.since else "the first record"
    until = r.until.isoformat() if r.until else "the last record"
    return f"{since} to {until}"


def replay_text(r: ReplayResult) -> str:
    out = (f"replayed {r.replayed:,} recorded decisions of {r.db} ({_when(r)}) under the candidate policy "
           f"{r.candidate_hash[:12]} ({len(r.candidate)} rule files) in {r.seconds:.2f} s: "
           f"{r.changed:,} would change\n")
    if r.masked:
        out += f"note: {r.masked:,} recorded requests were masked when written and were decided as masked\n"
    if not r.changes:
        return out
    out += _rich_table(("change", "decisions"), list(r.by_transition.items()), title="Changes by transition")
    out += _rich_table(("rule", "decisions"), list(r.by_rule.items()), title="Changes by rule")
    rows = []
    for rule in r.by_rule:
        for c in r.examples(rule):
            rows.append((rule, c.seq, c.ts.isoformat(timespec="seconds"), c.workflow or "", c.step or "",
                         c.action or "", c.resource or "", c.transition))
    out += _rich_table(("rule", "seq", "recorded at", "workflow", "step", "action", "resource", "change"), rows,
                       title="Examples")
    return out


def replay_csv(r: ReplayResult) -> str:
    out = io.StringIO()
    w = csv_writer(out)
    w.writerow(COLUMNS)
    for c in r.changes:
        row = c.row()
        w.writerow(["" if row.get(k) is None else row[k] for k in COLUMNS])
    return out.getvalue()


def replay_html(r: ReplayResult, provenance: Provenance) -> str:
    meta = [("Candidate policy", ", ".join(r.candidate)), ("Candidate hash", r.candidate_hash),
            ("Period", _when(r)), ("Decisions replayed", f"{r.replayed:,}"), ("Would change", f"{r.changed:,}"),
            ("Recorded policy versions", ", ".join(f"{h[:12]} ({n:,})" for h, n in r.recorded_policies.items())
             or "none"),
            ("Masked requests", f"{r.masked:,}")]
    body = ("<p class='lead'>Every recorded decision request decided again under the candidate policy, at the "
            "time it was recorded; the log was opened read-only and nothing was written to it. Budgets are decided "
            "against an empty ledger and monitor blocks are not applied.</p>" + _meta(meta))
    if not r.changes:
        body += "<p class='ok'>No decision would change.</p>"
        return page("Policy replay", body, provenance)
    body += "<h2>Changes by transition</h2>" + _html_table(("change", "decisions"), list(r.by_transition.items()))
    body += "<h2>Changes by rule</h2>" + _html_table(("rule", "decisions"), list(r.by_rule.items()))
    shown = r.changes[:HTML_ROWS]
    body += (f"<h2>Changed decisions</h2><p>{len(shown):,} of {r.changed:,}"
             + (" (the CSV export has every one)" if r.changed > len(shown) else "") + "</p>")
    body += _html_table(("seq", "recorded at", "workflow", "run", "step", "principal", "action", "resource",
                         "change", "recorded rules", "replayed rules"),
                        [(c.seq, c.ts.isoformat(timespec="seconds"), c.workflow, c.run_id, c.step, c.principal,
                          c.action, c.resource, c.transition, " ".join(c.recorded_rules) or "—",
                          " ".join(c.replayed_rules) or "—") for c in shown])
    return page("Policy replay", body, provenance)


__all__ = ["replay_csv", "replay_html", "replay_text"]
