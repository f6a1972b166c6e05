"""Budgets: calendar UTC windows, the two ledgers, and how budgets decide requests."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from policyengine import DuckDBLedger, InMemoryLedger, load_policy
from policyengine.budgets import BudgetLedger, window_bounds, window_start

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 15, 42, 7, tzinfo=UTC)

WINDOWS = [
    ("hour", NOW, datetime(2026, 11, 24, 15, tzinfo=UTC)),
    ("day", NOW, datetime(2026, 11, 24, tzinfo=UTC)),
    ("month", NOW, datetime(2026, 11, 1, tzinfo=UTC)),
    ("day", datetime(2026, 11, 24, 15, 42), datetime(2026, 11, 24, tzinfo=UTC)),  # naive = UTC
    ("day", datetime(2026, 11, 25, 1, 0, tzinfo=timezone(timedelta(hours=3))), datetime(2026, 11, 24, tzinfo=UTC)),
    ("month", datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize("window,now,start", WINDOWS)
def test_windows_are_calendar_utc(window, now, start):
    assert window_start(window, now) == start


@pytest.fixture(params=["memory", "duckdb"])
def ledger(request, tmp_path) -> BudgetLedger:
    if request.param == "memory":
        return InMemoryLedger()
    return DuckDBLedger(tmp_path / "ledger.duckdb")


def test_ledger_sums_usage_since_the_window_start(ledger):
    ledger.charge("workflow:a", "tokens", 100, NOW)
    ledger.charge("workflow:a", "tokens", 50, NOW - timedelta(minutes=50))  # previous hour
    ledger.charge("workflow:a", "tokens", 7, NOW - timedelta(days=30))  # previous month
    ledger.charge("workflow:a", "USD", 2.5, NOW)
    ledger.charge("workflow:b", "tokens", 1000, NOW)
    assert isinstance(ledger, BudgetLedger)
    assert ledger.usage("workflow:a", "tokens", window_start("hour", NOW)) == 100
    assert ledger.usage("workflow:a", "tokens", window_start("day", NOW)) == 150
    assert ledger.usage("workflow:a", "tokens", window_start("month", NOW)) == 150
    assert ledger.usage("workflow:a", "USD", window_start("day", NOW)) == 2.5
    assert ledger.usage("workflow:c", "tokens", window_start("day", NOW)) == 0


def test_duckdb_ledger_is_durable_across_processes(tmp_path):
    db = tmp_path / "ledger.duckdb"
    script = (
        "import sys; from datetime import datetime, timezone; from policyengine import DuckDBLedger\n"
        "with DuckDBLedger(sys.argv[1]) as l: l.charge('model:big', 'USD', 1.25, datetime(2026,11,24,9,tzinfo=timezone.utc))\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script, str(db)], check=True)
    with DuckDBLedger(db) as ledger:
        assert ledger.usage("model:big", "USD", window_start("day", NOW)) == 2.5


def test_duckdb_ledger_shares_an_open_connection(tmp_path):
    conn = duckdb.connect(str(tmp_path / "shared.duckdb"))
    conn.execute("CREATE TABLE audit_log (seq INTEGER)")
    ledger = DuckDBLedger(conn)
    ledger.charge("role:analyst", "tokens", 42, NOW)
    conn.execute("INSERT INTO audit_log VALUES (1)")
    assert conn.execute("SELECT sum(amount) FROM budget_usage").fetchone()[0] == 42
    assert ledger.usage("role:analyst", "tokens", window_start("hour", NOW)) == 42
    ledger.close()
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1  # still open


POLICY = """
package spend
role analyst
role finance_lead

model small
    region "eu-west-1" hosting internal
    cost 0.20 USD per 1M tokens
model big
    cost 10 USD per 1M tokens

rule analysts_invoke
    allow role analyst to invoke model "*"
rule analysts_read
    allow role analyst to read dataset "*"

budget wf
    for workflow "wf-1"
    limit 1000 tokens per month
    warn at 80%
    on exceed deny

budget big_daily
    for model big
    limit 1 USD per day
    on exceed route to model small

budget wf2
    for workflow "wf-2"
    limit 100 tokens per hour
    on exceed escalate to role finance_lead

budget analysts
    for role analyst
    limit 1_000_000 tokens per day
"""


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    (tmp_path / "spend.policy").write_text(POLICY)
    return tmp_path


def invoke(model="small", workflow="wf-1", tokens=None, cost_usd=None, approvals=None):
    context = {"workflow": workflow}
    if tokens is not None:
        context["tokens"] = tokens
    if cost_usd is not None:
        context["cost_usd"] = cost_usd
    request = {"principal": {"id": "ann", "roles": ["analyst"]}, "action": "invoke",
               "resource": {"kind": "model", "id": model}, "context": context}
    if approvals:  # bound to this request and given at the test's NOW (docs/engine.md)
        from policyengine.approval_binding import request_hash

        request["approvals"] = [{"request_hash": request_hash(request), "ts": NOW.isoformat(), **a} for a in approvals]
    return request


def test_usage_plus_estimate_against_the_limit_with_warning(policy_dir):
    ledger = InMemoryLedger()
    policy = load_policy(policy_dir, ledger=ledger)
    first = policy.evaluate(invoke(tokens=500), now=NOW)
    assert (first.effect, first.obligations) == ("allow", ())
    ledger.charge("workflow:wf-1", "tokens", 300, NOW)
    warned = policy.evaluate(invoke(tokens=500), now=NOW)
    assert warned.effect == "allow"
    (warning,) = warned.obligations
    assert warning.model_dump() == {"kind": "budget_warning", "budget": "spend.wf", "used": 800.0,
                                    "limit": 1000.0, "unit": "tokens", "window": "month", "percent": 80.0}
    ledger.charge("workflow:wf-1", "tokens", 600, NOW)
    denied = policy.evaluate(invoke(tokens=500), now=NOW)
    assert denied.effect == "deny"
    assert [r.rule for r in denied.reasons] == ["spend.wf"]
    assert "1,400 tokens this month would exceed the limit of 1,000" in denied.reasons[0].message
    next_month = policy.evaluate(invoke(tokens=500), now=datetime(2026, 12, 1, tzinfo=UTC))
    assert (next_month.effect, next_month.obligations) == ("allow", ())


def test_budgets_do_not_apply_when_nothing_is_spent(policy_dir):
    ledger = InMemoryLedger()
    ledger.charge("workflow:wf-1", "tokens", 5000, NOW)
    policy = load_policy(policy_dir, ledger=ledger)
    read = {"principal": {"id": "ann", "roles": ["analyst"]}, "action": "read",
            "resource": {"kind": "dataset", "id": "d"}, "context": {"workflow": "wf-1"}}
    assert policy.evaluate(read, now=NOW).effect == "allow"
    assert policy.evaluate(invoke(tokens=1), now=NOW).effect == "deny"


ESTIMATES = [
    # case, request, effect, route
    ("tokens x registry price under the limit", invoke("big", "none", tokens=50_000), "allow", None),
    ("tokens x registry price over the limit reroutes", invoke("big", "none", tokens=200_000), "allow", "small"),
    ("declared cost over the limit reroutes", invoke("big", "none", tokens=1, cost_usd=5), "allow", "small"),
    ("declared cost under the limit", invoke("big", "none", tokens=900_000, cost_usd=0.5), "allow", None),
]


@pytest.mark.parametrize("case,request_,effect,route", ESTIMATES, ids=[e[0] for e in ESTIMATES])
def test_estimates_and_route_on_exceed(policy_dir, case, request_, effect, route):
    decision = load_policy(policy_dir).evaluate(request_, now=NOW)
    assert (decision.effect, decision.route) == (effect, route)
    if route:
        assert decision.reasons[0].rule == "spend.big_daily"
        assert "rerouted to model small" in decision.reasons[0].message


def test_escalate_on_exceed_until_approved(policy_dir):
    policy = load_policy(policy_dir)
    decision = policy.evaluate(invoke(workflow="wf-2", tokens=200), now=NOW)
    assert decision.effect == "escalate"
    (ob,) = decision.obligations
    assert (ob.kind, ob.gate, ob.role) == ("approval_required", "spend.wf2", "finance_lead")
    approved = policy.evaluate(invoke(workflow="wf-2", tokens=200, approvals=[
        {"gate": "spend.wf2", "approver": "fred", "roles": ["finance_lead"]}]), now=NOW)
    assert approved.effect == "allow"


def test_charge_hits_every_scope_of_the_request(policy_dir):
    ledger = InMemoryLedger()
    policy = load_policy(policy_dir, ledger=ledger)
    scopes = policy.charge(invoke("big", tokens=10), tokens=900_000, cost=0.75, at=NOW)
    assert scopes == ("workflow:wf-1", "model:big", "role:analyst")
    assert ledger.usage("role:analyst", "tokens", window_start("day", NOW)) == 900_000
    assert ledger.usage("model:big", "USD", window_start("day", NOW)) == 0.75
    over = policy.evaluate(invoke("small", workflow="none", tokens=200_000), now=NOW)
    assert (over.effect, [r.rule for r in over.reasons]) == ("deny", ["spend.analysts"])


def test_policy_reads_a_duckdb_ledger_written_by_another_process(policy_dir, tmp_path):
    db = tmp_path / "b.duckdb"
    script = (
        "import sys; from datetime import datetime, timezone; from policyengine import DuckDBLedger\n"
        "with DuckDBLedger(sys.argv[1]) as l: l.charge('workflow:wf-1', 'tokens', 999, "
        "datetime(2026,11,2,tzinfo=timezone.utc))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True)
    with DuckDBLedger(db) as ledger:
        policy = load_policy(policy_dir, ledger=ledger)
        assert policy.evaluate(invoke(tokens=1), now=NOW).effect == "allow"
        assert policy.evaluate(invoke(tokens=2), now=NOW).effect == "deny"


def test_duckdb_ledger_cache_is_written_through_and_refreshable(tmp_path):
    conn = duckdb.connect(str(tmp_path / "c.duckdb"))
    ledger = DuckDBLedger(conn)
    day = window_bounds("day", NOW)
    assert ledger.usage("agent:bot", "tokens", *day) == 0  # loads the (empty) running total
    ledger.charge("agent:bot", "tokens", 5, NOW)
    assert ledger.usage("agent:bot", "tokens", *day) == 5
    conn.execute("UPDATE budget_totals SET amount = amount + 7 WHERE period = 'day'")
    assert ledger.usage("agent:bot", "tokens", *day) == 5  # written behind the ledger's back
    ledger.refresh()
    assert ledger.usage("agent:bot", "tokens", *day) == 12


def test_charge_a_routed_call_to_the_model_the_route_chose(policy_dir):
    ledger = InMemoryLedger()
    policy = load_policy(policy_dir, ledger=ledger)
    routed = invoke(model=None, workflow="wf-1", tokens=10)
    routed["resource"].pop("id")
    assert policy.budget_scopes(routed) == ("workflow:wf-1", "role:analyst")  # no model scope until one is chosen
    scopes = policy.charge(routed, tokens=40, cost=2.0, model="big", at=NOW)
    assert scopes == ("workflow:wf-1", "model:big", "role:analyst")
    assert ledger.usage("model:big", "USD", window_start("day", NOW)) == 2.0
