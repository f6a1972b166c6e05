"""The evidence pack for a period: what an auditor is handed (``policyengine report evidence``).

One read-only pass over the audit log answers, for [since, until): which policy
versions decided (hashes, who loaded them, which keys signed the records),
how requests were decided, what people did (approvals, who, how fast, overrides,
expiries), which models ran (and their versions where recorded), what the bias
and drift monitors found and did, what went wrong (denials, budget alerts,
blocks, failed runs), and whether the log itself verifies, against which signed
checkpoint. Each section names the obligations it serves; docs/evidence.md maps
them to EU AI Act Art. 12 and 14 and ISO/IEC 42001 Annex A controls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import duckdb

from .db import first_line, open_readonly, require_audit_log, sql
from .errors import ReportError
from .provenance import Provenance, log_provenance
from .render import _html_table, _json_value, _meta, page


@dataclass(frozen=True, slots=True)
class SectionSpec:
    key: str
    title: str
    query: str
    serves: str  # the obligations this section is evidence for (docs/evidence.md)
    about: str


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("policies", "Policy versions in force", "evidence_policies",
                "EU AI Act Art. 12(2)(a); ISO/IEC 42001 A.2.2, A.6.2.8",
                "Every policy hash that decided in the period, with the keys whose signed checkpoints cover its "
                "records."),
    SectionSpec("policy_loads", "Policy loads", "evidence_policy_loads",
                "EU AI Act Art. 12(2)(a); ISO/IEC 42001 A.6.2.5",
                "Who loaded which rule files, when, under which hash."),
    SectionSpec("decisions", "Decisions by outcome", "evidence_decisions",
                "EU AI Act Art. 12(1), 12(2)(c); ISO/IEC 42001 A.6.2.6, A.6.2.8",
                "Every policy decision recorded in the period, by workflow and effect."),
    SectionSpec("runs", "Workflow runs by outcome", "evidence_runs",
                "EU AI Act Art. 12(2)(c); ISO/IEC 42001 A.6.2.6",
                "Each run counted once, by its latest state in the period."),
    SectionSpec("oversight", "Human oversight", "evidence_oversight",
                "EU AI Act Art. 14(1), 14(4)(d), 14(4)(e); ISO/IEC 42001 A.9.2, A.3.2",
                "Approvals by gate, role, approver and outcome; latency from request to decision. A rejection "
                "is a person overriding what automation proposed; an expiry is a deadline passing without one."),
    SectionSpec("models", "Models in use", "evidence_models",
                "EU AI Act Art. 12(2)(b); ISO/IEC 42001 A.6.2.6, A.7.5",
                "Model calls by model, provider and the version each call recorded."),
    SectionSpec("monitoring", "Bias and drift monitoring", "evidence_monitoring",
                "EU AI Act Art. 12(2)(a), 12(2)(b), 14(4)(a); ISO/IEC 42001 A.5.4, A.6.2.6",
                "Every monitor result, breach and action (alert, block, escalate), and every lifted block; "
                "a result the monitor could not evaluate says why (not_evaluated): it is no reading."),
    SectionSpec("incidents", "Incidents", "evidence_incidents",
                "EU AI Act Art. 12(2)(a); ISO/IEC 42001 A.6.2.6, A.8.4",
                "Denied requests by the rule that denied them, budget warnings and breaches, models blocked by a "
                "monitor, failed runs."),
)


@dataclass(frozen=True)
class Section:
    spec: SectionSpec
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.spec.title, "serves": self.spec.serves, "about": self.spec.about,
                "rows": [{c: _json_value(v) for c, v in zip(self.columns, r, strict=True)} for r in self.rows]}


@dataclass(frozen=True)
class Evidence:
    db: str
    since: datetime
    until: datetime
    sections: tuple[Section, ...]
    provenance: Provenance

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.spec.key == key)

    def summary(self) -> dict[str, Any]:
        """Headline numbers: decisions by effect, approvals by outcome, approvers, incidents, verification."""
        dec = self.section("decisions")
        effects = {e: sum(r[dec.columns.index(e)] for r in dec.rows) for e in ("allow", "deny", "escalate")}
        ov = self.section("oversight")
        outcomes: dict[str, int] = {}
        for r in ov.rows:
            outcomes[r[3]] = outcomes.get(r[3], 0) + r[4]
        approvers = sorted({r[2] for r in ov.rows if r[2] != "(deadline)"})
        return {
            "decisions": sum(effects.values()), "decisions_by_effect": effects,
            "approvals_by_outcome": outcomes, "approvers": approvers,
            "overrides": outcomes.get("rejected", 0), "expiries": outcomes.get("expired", 0),
            "policy_versions": len(self.section("policies").rows),
            "monitor_breaches": sum(1 for r in self.section("monitoring").rows if r[7] is True),
            # no reading is no health: counted beside the breaches, never among the passes
            "monitor_not_evaluated": sum(1 for r in self.section("monitoring").rows if r[9] is not None),
            "incidents": sum(r[2] for r in self.section("incidents").rows),
            "log_verified": self.provenance.verified,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"report": "evidence", "db": self.db, "since": self.since.isoformat(), "until": self.until.isoformat(),
                "audit_verification": self.provenance.to_dict(), "summary": self.summary(),
                "sections": {s.spec.key: s.to_dict() for s in self.sections}}


def evidence(db: str | Path, *, since: datetime | None = None, until: datetime | None = None,
             pubkeys: tuple[str, ...] = ()) -> Evidence:
    """Collect the evidence of [since, until) (default: the 30 days before now) from the audit log ``db``."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=30)
    if since >= until:
        raise ReportError(f"the period is empty: --since {since.isoformat()} is not before --until {until.isoformat()}")
    skipped: list[str] = []
    con = open_readonly(db, skipped=skipped)
    try:
        require_audit_log(con, db)
        sections = []
        for spec in SECTIONS:
            cur = con.execute(sql(spec.query), {"since": since, "until": until})
            columns = tuple(d[0] for d in cur.description)
            sections.append(Section(spec, columns, tuple(tuple(r) for r in cur.fetchall())))
    except duckdb.Error as e:
        raise ReportError(f"report evidence: {first_line(e)}") from None
    finally:
        con.close()
    return Evidence(str(db), since, until, tuple(sections), log_provenance(db, pubkeys, skipped))


def render_evidence(e: Evidence, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(e.to_dict(), indent=2) + "\n"
    if fmt != "html":
        raise ReportError("report evidence is written as --format html or --format json")
    s = e.summary()
    verdict = {True: "verified", False: "FAILED verification", None: "not verified"}[s["log_verified"]]
    meta = [("Period", f"{e.since.isoformat(timespec='seconds')} to {e.until.isoformat(timespec='seconds')}"),
            ("Audit log", f"{e.db} ({verdict})"),
            ("Decisions", f"{s['decisions']:,} (" + ", ".join(f"{k} {v:,}" for k, v in s["decisions_by_effect"].items())
             + ")"),
            ("Human decisions", ", ".join(f"{k} {v:,}" for k, v in s["approvals_by_outcome"].items()) or "none"),
            ("Approvers", ", ".join(s["approvers"]) or "none"),
            ("Overrides / expiries", f"{s['overrides']:,} rejected / {s['expiries']:,} expired"),
            ("Policy versions", str(s["policy_versions"])),
            ("Monitor breaches", str(s["monitor_breaches"])),
            ("Monitor results not evaluated", str(s["monitor_not_evaluated"])),
            ("Incident events", f"{s['incidents']:,}")]
    body = ("<p class='lead'>Evidence of how the AI systems governed by this policy engine were run in the period: "
            "record-keeping (EU AI Act Art. 12), human oversight (Art. 14) and ISO/IEC 42001 Annex A controls; "
            "the mapping of each section is in docs/evidence.md.</p>" + _meta(meta))
    for sec in e.sections:
        body += (f"<h2>{escape(sec.spec.title)}</h2><p class='serves'>Serves: {escape(sec.spec.serves)}</p>"
                 f"<p>{escape(sec.spec.about)}</p>" + _html_table(sec.columns, sec.rows))
    body += ("<h2>Audit verification</h2><p class='serves'>Serves: EU AI Act Art. 12(1); ISO/IEC 42001 A.6.2.8"
             "</p><p>" + escape(e.provenance.summary) + "</p>")
    return page("Evidence for regulators", body, e.provenance)


__all__ = ["SECTIONS", "Evidence", "evidence", "render_evidence"]
