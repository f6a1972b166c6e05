"""Named reports: each ``reports/*.sql`` run on a real DuckDB audit file.

The fixture writes a small, hand-checked story into an ``audit_log`` table of the
schema in docs/audit-events.md (it will switch to the audit module's writer once
that lands); each test states what an auditor must read from one report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import sql as audit_sql
from policyengine.reporting import ReportError
from policyengine.reporting.reports import (
    get_report,
    list_reports,
    parse_param_args,
    placeholders,
    run_named_report,
)

D1 = datetime(2026, 11, 2, tzinfo=UTC)
D2 = datetime(2026, 11, 3, tzinfo=UTC)
H1, H2 = "sha256:aaa", "sha256:bbb"



def at(day: datetime, hh: int, mm: int = 0) -> datetime:
    return day + timedelta(hours=hh, minutes=mm)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def decision(actor, ptype, action, kind, rid, effect, reasons, *, data=None, context=None,
             obligations=(), route=None, attrs=None):
    request = {"principal": {"id": actor, "type": ptype, "roles": [], "attrs": attrs or {}},
               "action": action, "resource": {"kind": kind, "id": rid, "attrs": {}},
               "data": data or {}, "context": context or {}}
    reasons = [{"rule": r, "file": "rules/finance.policy", "line": 10 + i, "message": m}
               for i, (r, m) in enumerate(reasons)]
    return {"request": request, "decision": {"effect": effect, "reasons": reasons,
                                             "obligations": list(obligations), "route": route}}


def model_call(model, tokens, cost, *, status="ok", subject=None, outcome=None, output=None, label=None):
    p = {"model": model, "provider": "local" if model == "classifier_small" else "openai-compatible",
         "tokens": tokens, "cost_usd": cost, "latency_ms": 40.0, "status": status, "step": "classify",
         "subject": subject or {}, "outcome": outcome, "output": output or {}}
    if label is not None:
        p["label"] = label
    return p


def approval_required(gate, deadline):
    return {"kind": "approval_required", "gate": gate, "role": "senior_analyst",
            "deadline_seconds": 14400, "deadline_at": iso(deadline), "on_timeout": "deny",
            "distinct_approver": True}


RESIDENCY_MSG = ("restricted data stays in the EU (compute region 'us-east-1', "
                 "allowed: eu-central-1, eu-west-1)")

# (ts, event, actor, workflow, run_id, payload, policy_hash)
STORY = [
    (at(D1, 8), "policy_loaded", "ci", None, None, {"files": ["rules/finance.policy"], "rules": 7}, H1),
    (at(D1, 9), "decision", "alice", None, None,
     decision("alice", "user", "read", "dataset", "erp/invoices/2026-11", "allow",
              [("finance.analysts_read_invoices", "AP analysts review invoice exceptions")],
              data={"classification": "internal", "origin": "DE"}), H1),
    (at(D1, 9, 1), "data_access", "alice", None, None,
     {"dataset": "erp/invoices/2026-11", "classification": "internal", "origin": "DE", "step": "review"}, H1),
    (at(D1, 9, 5), "decision", "invoice_classifier", "invoice-exceptions", "r1",
     decision("invoice_classifier", "agent", "invoke", "model", "classifier_small", "allow",
              [("finance.agents_call_models", "agents may call models")]), H1),
    (at(D1, 9, 6), "model_call", "invoice_classifier", "invoice-exceptions", "r1",
     model_call("classifier_small", 1200, 0.00024), H1),
    (at(D1, 9, 7), "model_call", "invoice_classifier", "invoice-exceptions", "r1",
     model_call("classifier_small", 800, 0.00016), H1),
    (at(D1, 9, 10), "decision", "invoice_classifier", "invoice-exceptions", "r1",
     decision("invoice_classifier", "agent", "invoke", "model", "frontier_llm", "deny",
              [("finance.no_restricted_data_offsite", "restricted data never leaves internal hosting"),
               ("finance.eu_personal_data", RESIDENCY_MSG)],
              data={"classification": "pii", "origin": "DE"}), H1),
    (at(D1, 10), "decision", "bob", "payments", "r2",
     decision("bob", "user", "approve_payment", "workflow", "payments", "escalate",
              [("finance.large_payment", "payments over 10,000 need a senior analyst")],
              obligations=[approval_required("finance.large_payment", at(D1, 14))]), H1),
    (at(D1, 10, 30), "approval", "dave", "payments", "r2",
     {"gate": "finance.large_payment", "requester": "bob", "approver": "dave", "outcome": "approved",
      "role": "senior_analyst", "requested_at": iso(at(D1, 10)), "decided_at": iso(at(D1, 10, 30)),
      "deadline": iso(at(D1, 14)), "note": "checked invoice"}, H1),
    (at(D1, 11), "decision", "carol", "payments", "r3",
     decision("carol", "user", "approve_payment", "workflow", "payments", "escalate",
              [("finance.large_payment", "payments over 10,000 need a senior analyst")],
              obligations=[approval_required("finance.large_payment", at(D1, 15))]), H1),
    (at(D1, 12), "decision", "mallory", None, None,
     decision("mallory", "user", "read", "dataset", "hr/salaries", "deny",
              [("<default-deny>", "no allow rule matches this request (default deny)")]), H1),
    (at(D2, 8), "policy_loaded", "ci", None, None, {"files": ["rules/finance.policy"], "rules": 8}, H2),
    (at(D2, 9), "decision", "erin", "payments", "r4",
     decision("erin", "user", "approve_payment", "workflow", "payments", "escalate",
              [("finance.large_payment", "payments over 10,000 need a senior analyst")],
              obligations=[approval_required("finance.large_payment", at(D2, 10))]), H2),
    (at(D2, 11), "approval", "erin", "payments", "r4",
     {"gate": "finance.large_payment", "requester": "erin", "approver": "erin", "outcome": "approved",
      "role": "senior_analyst", "requested_at": iso(at(D2, 9)), "decided_at": iso(at(D2, 11)),
      "deadline": iso(at(D2, 10)), "note": ""}, H2),
    (at(D2, 9, 30), "decision", "summarizer", "reports", "r5",
     decision("summarizer", "agent", "invoke", "model", None, "allow",
              [("finance.agents_call_models", "agents may call models")], route="frontier_llm",
              attrs={"owner": "bi-team@example.com"}), H2),
    (at(D2, 9, 31), "model_call", "summarizer", "reports", "r5", model_call("frontier_llm", 5000, 0.05), H2),
    (at(D2, 9, 32), "model_call", "summarizer", "reports", "r5",
     model_call("frontier_llm", 0, 0.0, status="timeout"), H2),
    (at(D2, 12), "alert", "monitor", None, None,
     {"kind": "bias", "rule": "finance.payment_fairness", "model": "classifier_small",
      "metric": "disparate_impact", "value": 0.62, "threshold": ">= 0.8", "breach": True,
      "action": "escalate", "details": {}}, H2),
]


def write_audit_db(path: Path, story=STORY) -> Path:
    """A database with the audit module's own schema, holding ``story`` as written.

    Rows go in directly (not through ``AuditLog``, which stamps the current time)
    because the story needs past timestamps; they are not signed.
    """
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(audit_sql.q("create_schema"))
    if story:  # one statement with list parameters: executemany is slow in DuckDB
        cols = list(zip(*[(i, ts, ev, actor, wf, run, json.dumps(p), h)
                          for i, (ts, ev, actor, wf, run, p, h) in enumerate(story, 1)]))
        con.execute(
            "INSERT INTO audit_log SELECT unnest($seq), unnest($ts), 'test', unnest($ev), unnest($actor), "
            "unnest($wf), unnest($run), unnest($payload)::JSON, unnest($hash), 'k1', 'leaf'",
            dict(zip(("seq", "ts", "ev", "actor", "wf", "run", "payload", "hash"), map(list, cols))),
        )
    con.close()
    return path


@pytest.fixture
def audit_db(tmp_path) -> Path:
    return write_audit_db(tmp_path / "audit.duckdb")


def rows(db, name, **params):
    r = run_named_report(db, name, {k: str(v) for k, v in params.items()})
    return [dict(zip(r.columns, row)) for row in r.rows]


# --- the report files themselves --------------------------------------------------------

REQUIRED = {"decisions_by_rule", "denials", "escalations", "overdue_approvals", "budget_spend",
            "residency_blocks", "model_inventory", "agent_activity", "policy_versions"}


def test_every_required_report_exists():
    assert REQUIRED <= {s.name for s in list_reports()}


@pytest.mark.parametrize("spec", list_reports(), ids=lambda s: s.name)
def test_every_report_declares_exactly_the_parameters_its_sql_binds(spec):
    assert spec.title and spec.description and spec.regulation
    assert placeholders(spec) == {p.name for p in spec.params}
    assert all(p.description for p in spec.params)


@pytest.mark.parametrize("spec", list_reports(), ids=lambda s: s.name)
def test_every_report_runs_on_the_story_and_on_an_empty_log(spec, audit_db, tmp_path):
    params = {p.name: "*" for p in spec.params if p.required}
    run_named_report(audit_db, spec.name, params)
    empty = write_audit_db(tmp_path / "empty.duckdb", [])
    assert run_named_report(empty, spec.name, params).rows == ()


# --- what each report tells an auditor -------------------------------------------------------


def test_decisions_by_rule_and_effect_per_day(audit_db):
    got = {(str(r["day"]), r["rule"], r["effect"]): r["decisions"] for r in rows(audit_db, "decisions_by_rule")}
    assert got == {
        ("2026-11-02", "<default-deny>", "deny"): 1,
        ("2026-11-02", "finance.agents_call_models", "allow"): 1,
        ("2026-11-02", "finance.analysts_read_invoices", "allow"): 1,
        ("2026-11-02", "finance.eu_personal_data", "deny"): 1,
        ("2026-11-02", "finance.large_payment", "escalate"): 2,
        ("2026-11-02", "finance.no_restricted_data_offsite", "deny"): 1,
        ("2026-11-03", "finance.agents_call_models", "allow"): 1,
        ("2026-11-03", "finance.large_payment", "escalate"): 1,
    }


def test_decisions_by_rule_respects_the_period(audit_db):
    got = rows(audit_db, "decisions_by_rule", since="2026-11-03", until="2026-11-04")
    assert {str(r["day"]) for r in got} == {"2026-11-03"}


def test_denials_list_every_reason(audit_db):
    got = [(r["actor"], r["resource"], r["rule"]) for r in rows(audit_db, "denials")]
    assert got == [
        ("invoice_classifier", "model:frontier_llm", "finance.eu_personal_data"),
        ("invoice_classifier", "model:frontier_llm", "finance.no_restricted_data_offsite"),
        ("mallory", "dataset:hr/salaries", "<default-deny>"),
    ]
    only = rows(audit_db, "denials", rule="<default-deny>")
    assert [r["message"] for r in only] == ["no allow rule matches this request (default deny)"]


def test_escalations_show_approver_latency_and_four_eyes(audit_db):
    got = rows(audit_db, "escalations")
    assert [(r["requester"], r["approver"], r["outcome"], r["latency_seconds"], r["within_deadline"], r["four_eyes"])
            for r in got] == [
        ("bob", "dave", "approved", 1800.0, True, True),
        ("erin", "erin", "approved", 7200.0, False, False),
    ]


def test_overdue_approvals_pending_and_late(audit_db):
    got = rows(audit_db, "overdue_approvals", as_of="2026-11-03T00:00:00Z")
    assert [(r["run_id"], r["requester"], r["status"], r["hours_overdue"]) for r in got] == [
        ("r3", "carol", "pending", 9.0),
        ("r4", "erin", "decided late (approved)", 1.0),
    ]
    before = rows(audit_db, "overdue_approvals", as_of="2026-11-02T14:59:00Z")
    assert [r["run_id"] for r in before] == ["r4"]  # carol's deadline (15:00) not yet passed


def test_budget_spend_per_scope_and_day(audit_db):
    got = {(str(r["window_start"])[:10], r["scope_kind"], r["scope"]): (r["calls"], r["tokens"], r["cost_usd"])
           for r in rows(audit_db, "budget_spend")}
    assert got == {
        ("2026-11-02", "agent", "invoice_classifier"): (2, 2000, 0.0004),
        ("2026-11-02", "model", "classifier_small"): (2, 2000, 0.0004),
        ("2026-11-02", "workflow", "invoice-exceptions"): (2, 2000, 0.0004),
        ("2026-11-03", "agent", "summarizer"): (2, 5000, 0.05),
        ("2026-11-03", "model", "frontier_llm"): (2, 5000, 0.05),
        ("2026-11-03", "workflow", "reports"): (2, 5000, 0.05),
    }
    month = rows(audit_db, "budget_spend", window="month")
    assert {str(r["window_start"])[:10] for r in month} == {"2026-11-01"}


def test_residency_blocks_by_origin_and_region(audit_db):
    got = rows(audit_db, "residency_blocks")
    assert [(r["rule"], r["data_origin"], r["classification"], r["region"], r["blocked_requests"]) for r in got] == [
        ("finance.eu_personal_data", "DE", "pii", "us-east-1", 1),
    ]


def test_model_inventory_counts_calls_failures_and_callers(audit_db):
    got = {r["model"]: r for r in rows(audit_db, "model_inventory")}
    assert set(got) == {"classifier_small", "frontier_llm"}
    small, frontier = got["classifier_small"], got["frontier_llm"]
    assert (small["calls"], small["failed_calls"], small["tokens"], small["decisions"]) == (2, 0, 2000, 1)
    assert (frontier["calls"], frontier["failed_calls"], frontier["decisions"], frontier["denied"]) == (2, 1, 2, 1)
    assert frontier["called_by"] == "summarizer"


def test_agent_activity_by_owner(audit_db):
    got = {r["agent"]: r for r in rows(audit_db, "agent_activity")}
    assert got["summarizer"]["owner"] == "bi-team@example.com"
    assert got["invoice_classifier"]["owner"] == "(unknown)"  # not claimed, no --rules
    assert (got["invoice_classifier"]["decisions"], got["invoice_classifier"]["denied"],
            got["invoice_classifier"]["model_calls"]) == (2, 1, 2)


def test_policy_versions_in_force_over_time(audit_db):
    got = rows(audit_db, "policy_versions")
    assert [(r["policy_hash"], r["rules"], r["decisions"]) for r in got] == [(H1, 7, 6), (H2, 8, 2)]
    assert got[0]["superseded_at"] == got[1]["in_force_from"] and got[1]["superseded_at"] is None


def test_data_access_by_glob(audit_db):
    got = rows(audit_db, "data_access", dataset="erp/*")
    assert [(r["kind"], r["actor"], r["effect"]) for r in got] == [("request", "alice", "allow"), ("access", "alice", None)]
    assert [r["actor"] for r in rows(audit_db, "data_access", dataset="hr/*")] == ["mallory"]


def test_alerts(audit_db):
    got = rows(audit_db, "alerts", kind="bias")
    assert [(r["rule"], r["value"], r["breach"], r["action"]) for r in got] == [
        ("finance.payment_fairness", 0.62, True, "escalate")]
    assert rows(audit_db, "alerts", kind="drift") == []


# --- bad input: one clear line ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("nope", {}, "unknown report 'nope'"),
        ("../etc/passwd", {}, "unknown report '../etc/passwd'"),
        ("data_access", {}, "report 'data_access' needs parameter 'dataset'"),
        ("denials", {"colour": "red"}, "report 'denials' has no parameter 'colour'"),
        ("denials", {"since": "yesterday"}, "parameter since='yesterday' is not an ISO 8601 timestamp"),
        ("budget_spend", {"window": "week"}, "parameter window='week' must be one of hour, day, month"),
    ],
)
def test_bad_report_requests(audit_db, name, params, message):
    with pytest.raises(ReportError) as e:
        run_named_report(audit_db, name, params)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_database_and_not_a_database(tmp_path):
    with pytest.raises(ReportError, match="database file not found"):
        run_named_report(tmp_path / "none.duckdb", "denials")
    junk = tmp_path / "junk.duckdb"
    junk.write_text("this is not a database\n" * 100)
    with pytest.raises(ReportError, match="not a DuckDB database") as e:
        run_named_report(junk, "denials")
    assert "\n" not in str(e.value)


def test_database_without_audit_log(tmp_path):
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(ReportError, match="has no audit_log table"):
        run_named_report(other, "denials")


def test_reports_never_write_to_the_database(audit_db):
    before = audit_db.read_bytes()
    for spec in list_reports():
        run_named_report(audit_db, spec.name, {p.name: "*" for p in spec.params if p.required})
    assert audit_db.read_bytes() == before


def test_param_pairs():
    assert parse_param_args(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ReportError, match="expected NAME=VALUE"):
        parse_param_args(["oops"])


def test_report_header_is_parsed():
    spec = get_report("escalations")
    assert spec.title.startswith("Escalations with approver")
    assert "EU AI Act Art. 14" in spec.regulation
    assert "four-eyes principle" in spec.description  # continuation lines are joined
    gate = {p.name: p for p in spec.params}["gate"]
    assert not gate.required and gate.default == "null"


# --- with the real engine and the real audit writer --------------------------------------------

E2E_POLICY = """\
package finance

role analyst
role senior_analyst extends analyst

model us_big
    provider "openai-compatible" region "us-east-1" hosting external

rule analysts_invoke
    allow role analyst to invoke model "*"

rule analysts_pay
    allow role analyst to approve_payment workflow "*"

residency eu_personal_data
    when data has classification and data.classification in ["pii"] and data.origin in ["DE", "FR"]
    require region in ["eu-west-1", "eu-central-1"]

escalate large_payment
    when action == "approve_payment" and context.amount > 10_000
    to role senior_analyst
    within 4h else deny
    require distinct approver
"""


def test_reports_read_what_the_engine_decides_and_the_audit_writer_signs(tmp_path):
    audit = pytest.importorskip("policyengine.audit")
    from policyengine.engine import load_policy

    (tmp_path / "finance.policy").write_text(E2E_POLICY)
    policy = load_policy([tmp_path / "finance.policy"])
    requests = [
        {"principal": {"id": "ann", "roles": ["analyst"]}, "action": "invoke",
         "resource": {"kind": "model", "id": "us_big"}, "data": {"classification": "pii", "origin": "DE"}},
        {"principal": {"id": "ann", "roles": ["analyst"]}, "action": "approve_payment",
         "resource": {"kind": "workflow", "id": "payments"}, "context": {"amount": 20_000}},
        {"principal": {"id": "bob", "roles": ["analyst"]}, "action": "read", "resource": {"kind": "dataset", "id": "hr"}},
    ]
    db = tmp_path / "audit.duckdb"
    with audit.AuditLog(db, audit.generate_key(tmp_path / "k.pem")) as log:
        log.append("policy_loaded", actor="ci", payload={"files": ["finance.policy"], "rules": 4},
                   policy_hash=policy.policy_hash)
        for i, request in enumerate(requests):
            decision = policy.evaluate(request)
            log.append("decision", actor=request["principal"]["id"], run_id=f"r{i}",
                       payload={"request": request, "decision": decision.to_dict()}, policy_hash=decision.policy_hash)
    blocks = run_named_report(db, "residency_blocks", {}, policy_set=policy.policy_set)
    assert [row[:4] for row in blocks.rows] == [("finance.eu_personal_data", "DE", "pii", "us-east-1")]
    denials = rows(db, "denials")
    assert [(r["actor"], r["rule"]) for r in denials] == [("ann", "finance.eu_personal_data"), ("bob", "<default-deny>")]
    later = (datetime.now(UTC) + timedelta(hours=5)).isoformat()
    overdue = rows(db, "overdue_approvals", as_of=later)
    assert [(r["requester"], r["gate"], r["status"]) for r in overdue] == [("ann", "finance.large_payment", "pending")]
    assert rows(db, "overdue_approvals", as_of=datetime.now(UTC).isoformat()) == []
    versions = rows(db, "policy_versions")
    assert [(r["policy_hash"], r["decisions"], r["rules"]) for r in versions] == [(policy.policy_hash, 3, 4)]
