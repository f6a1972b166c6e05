"""The five mission workflows on the shipped rules and sample data, through a real session."""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import pytest

from policyengine.audit import EVENTS
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.summary import BatchSummary
from policyengine.orchestrator.workflows import WORKFLOWS, load_items, sample_path

N = 60

# Which outcomes each workflow can end in on its shipped sample, and who may approve its gates.
EXPECTED = {
    "invoice-exceptions": ({"auto_resolved", "escalated", "returned_to_buyer", "queued_for_review"}, "alice"),
    "it-ticket-triage": ({"auto_resolved", "routed", "escalated"}, "frank"),
    "supply-chain-disruption": ({"auto_resolved", "escalated"}, "dana"),
    "fraud-routing": ({"auto_resolved", "escalated", "blocked"}, "erin"),
    "marketing-campaign": ({"followed_up", "sent", "not_targeted", "no_consented_channel", "suppressed", "escalated"},
                           "lena"),
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    config = SessionConfig(db=tmp / "pe.duckdb", key=tmp / "pe.key", create_key=True)
    results = {}
    with Session(config) as session:
        for name in WORKFLOWS:
            results[name] = session.orchestrator.run_batch(name, load_items(sample_path(name))[:N],
                                                           requested_by="operator")
    return config, results


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_each_workflow_runs_its_sample_under_the_shipped_rules(ran, workflow):
    _, results = ran
    outcomes, _ = EXPECTED[workflow]
    summary = BatchSummary.of(workflow, results[workflow])
    assert summary.items == N and summary.failed == 0
    assert set(summary.outcomes) <= outcomes | {"denied"}
    assert summary.tokens > 0
    assert summary.auto_resolved > 0 or workflow == "marketing-campaign"  # its deliveries are sent, not resolved


def test_model_call_rows_carry_what_the_bias_and_drift_reports_read(ran):
    config, _ = ran
    with duckdb.connect(str(config.db), read_only=True) as conn:
        rows = conn.execute("SELECT workflow, payload FROM audit_log WHERE event = 'model_call'").fetchall()
    assert {w for w, _ in rows} == set(WORKFLOWS)
    for _, raw in rows:
        p = json.loads(raw)
        assert p["status"] == "ok" and p["tokens"] > 0 and p["cost_usd"] >= 0
        assert isinstance(p["subject"], dict) and p["subject"] and isinstance(p["outcome"], str)
        assert 0 <= p["output"]["confidence"] <= 1 and p["label"] is not None


def test_every_run_has_a_run_event_and_every_step_a_decision(ran):
    config, results = ran
    total = sum(len(r) for r in results.values())
    with duckdb.connect(str(config.db), read_only=True) as conn:
        counts = dict(conn.execute("SELECT event, count(*) FROM audit_log GROUP BY event").fetchall())
        unrun = conn.execute("SELECT count(*) FROM orch_steps WHERE status NOT IN ('skipped')").fetchone()[0]
    if "run" in EVENTS:
        assert counts["run"] == total
    assert counts["decision"] >= unrun


@pytest.mark.parametrize("workflow", ["invoice-exceptions", "supply-chain-disruption", "fraud-routing"])
def test_waiting_runs_are_completed_by_the_directory_s_approver(ran, workflow):
    config, results = ran
    _, approver = EXPECTED[workflow]
    waiting = [r for r in results[workflow] if r.status == "waiting_approval"]
    assert waiting
    with Session(config) as session:
        done = [session.orchestrator.approve(r.run_id, approver) for r in waiting[:3]]
    roles = Counter(r.approval.role for r in waiting[:3])
    assert all(d.status in ("completed", "waiting_approval") for d in done), (done, roles)
    assert any(d.status == "completed" for d in done)


def test_an_unknown_sku_has_no_invented_stock_or_order_amount():
    from types import MappingProxyType

    from policyengine.orchestrator.workflow import Context
    from policyengine.orchestrator.workflows import supply_chain

    ctx = Context("r-1", supply_chain.NAME, "operator", MappingProxyType({"sku": "SKU-UNKNOWN"}),
                  MappingProxyType({}))
    stock = supply_chain._inventory(ctx)
    assert set(stock.values()) == {None}
    ctx = ctx.with_output("inventory", stock).with_output("find_suppliers", {"alternatives": []})
    assert supply_chain._order_context(ctx) == {}
    assert "unknown days of cover" in supply_chain._prompt(ctx).text()
