"""The runner as a specification: every step asks the policy first, and what the
policy says (allow, deny, route, escalate, budget) is what happens, durably.

Real parts throughout: rule files compiled by the engine, a DuckDB file in
tmp_path shared by run state, budget ledger and the signed audit log, and a
"process restart" modelled by closing the connection and opening a new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import duckdb
import pytest

from policyengine.audit import EVENTS, AuditLog, generate_key, load_private_key
from policyengine.budgets import DuckDBLedger
from policyengine.engine import load_policy
from policyengine.orchestrator.approvals import ApprovalRefused, Directory, User
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.orchestrator.providers import LocalProvider, ModelProfile, Providers
from policyengine.orchestrator.runner import Orchestrator, RecordError, RunError, SimulatedCrash
from policyengine.orchestrator.state import StateStore
from policyengine.orchestrator.summary import BatchSummary
from policyengine.orchestrator.workflow import (
    Ask,
    DataRead,
    HumanWait,
    ModelCall,
    Parallel,
    Prompt,
    ToolCall,
    Workflow,
)

RUN_EVENTS = "run" in EVENTS  # the audit log accepts the orchestrator's run events (docs/audit-events.md)

RULES = """\
package ops.pay
owner "ap@example.com"

role ap_agent
role analyst
role senior_analyst extends analyst

agent pay_bot
    owner "ap@example.com"
    roles ap_agent

model small
    provider "local" region "eu-west-1" hosting internal
    cost 0.20 USD per 1M tokens latency 40 ms
model big
    provider "openai-compatible" region "us-east-1" hosting external
    cost 10 USD per 1M tokens latency 900 ms

rule call_models
    allow role ap_agent to invoke model "*"
rule read_data
    allow role ap_agent to read dataset "*"
rule use_tools
    allow role ap_agent to call tool "*"
rule pay
    allow role ap_agent to approve_payment tool "*"
rule no_offsite_secrets
    deny any to invoke model "*"
    when data has classification and data.classification == "secret" and resource.hosting == "external"
    because "secret data stays on internal models"
rule no_blocked_vendor
    deny any to approve_payment tool "*"
    when context has vendor and context.vendor == "Shady Ltd"
    because "vendor is on the sanctions list"

escalate large_payment
    when action == "approve_payment" and context.amount > 10_000
    to role senior_analyst
    within 4h else deny
    require distinct approver

escalate huge_payment                 # a second gate on the same step, for another role
    when action == "approve_payment" and context.amount > 60_000
    to role analyst
    within 8h else deny

route classify
    when context.task == "classify"
    prefer small, big

budget tight
    for workflow "budgeted"
    limit 200 tokens per day
    warn at 50%
    on exceed deny

budget reroute
    for model "small"
    limit 300 tokens per day
    on exceed route to model big
"""

USERS = Directory(MappingProxyType({
    "carol": User("carol", "Carol", ("analyst",)),
    "bob": User("bob", "Bob", ("analyst",)),
    "alice": User("alice", "Alice", ("senior_analyst",)),
}), "test-directory")


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 24, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Effects:
    """The outside world of the payment tool: how often each payment really happened."""

    calls: dict[str, int] = field(default_factory=dict)

    def pay(self, ctx, key: str) -> dict:
        self.calls[key] = self.calls.get(key, 0) + 1
        return {"paid": ctx.item["amount"], "ref": key}


def _prompt(ctx) -> Prompt:
    return Prompt((("user", f"invoice {ctx.item['id']} for {ctx.item['amount']}"),), ("ok", "dispute"), "ok")


def pay_workflow(name: str, effects: Effects, *, data: dict | None = None) -> Workflow:
    return Workflow(name, "pay_bot", (
        ModelCall("classify", ask=lambda ctx: Ask("invoke", "model", None, data or {"classification": "internal"},
                                                  {"task": "classify", "tokens": 50}),
                  prompt=_prompt, subject=lambda ctx: {"vendor_region": ctx.item.get("region", "EU")},
                  label=lambda ctx: "ok", outcome=lambda ctx, c: "auto_resolved"),
        ToolCall("pay", effect=True, run=effects.pay,
                 ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", {},
                                     {"amount": ctx.item["amount"], "vendor": ctx.item.get("vendor", "Acme")})),
    ), fallback=ToolCall("queue", ask=lambda ctx: Ask("call", "tool", "ap/review-queue"),
                         run=lambda ctx, key: {"queued": ctx.item["id"]}),
        outcome=lambda ctx: "queued" if ctx.ran("queue") else "approved" if ctx.approved else "auto_resolved")


class Env:
    """One 'process': a connection to the database file and an orchestrator on it."""

    def __init__(self, tmp: Path, clock: Clock, workflows: dict, profiles: dict | None = None,
                 faults=None, rules: str = RULES) -> None:
        rules_file = tmp / "pay.policy"
        rules_file.write_text(rules)
        key = tmp / "audit.key"
        if not key.exists():
            generate_key(key)
        self.conn = duckdb.connect(str(tmp / "pe.duckdb"))
        self.audit = AuditLog(self.conn, load_private_key(key))
        self.ledger = BufferedLedger(DuckDBLedger(self.conn))
        self.policy = load_policy([rules_file], ledger=self.ledger)
        providers = Providers(default=LocalProvider(profiles or {}), retries=1, timeout_s=1)
        self.orch = Orchestrator(self.policy, StateStore(self.conn), self.audit, workflows=workflows,
                                 providers=providers, directory=USERS, ledger=self.ledger, clock=clock,
                                 faults=faults, record_runs=RUN_EVENTS)

    def events(self, run_id: str | None = None, event: str | None = None) -> list[dict]:
        self.orch.flush()
        rows = self.conn.execute(
            "SELECT event, actor, run_id, payload FROM audit_log "
            "WHERE ($run IS NULL OR run_id = $run) AND ($event IS NULL OR event = $event) ORDER BY seq",
            {"run": run_id, "event": event}).fetchall()
        return [{"event": e, "actor": a, "run_id": r, **json.loads(p)} for e, a, r, p in rows]

    def close(self) -> None:
        self.orch.close()
        self.audit.close()
        self.conn.close()

    def crash(self) -> None:
        """Stop without flushing run state or budget charges: only what was committed survives.

        (The audit log flushes on its own timer anyway; it is closed so the file can be reopened.)
        """
        self.audit.close()
        self.conn.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def effects() -> Effects:
    return Effects()


def test_allowed_run_completes_and_records_every_step(tmp_path, clock, effects):
    wf = pay_workflow("budgeted", effects)
    env = Env(tmp_path, clock, {"budgeted": wf})
    r = env.orch.start("budgeted", {"id": "INV-1", "amount": 900}, requested_by="carol")
    assert (r.status, r.outcome, r.models) == ("completed", "auto_resolved", ("small",))
    assert r.tokens > 0 and r.cost_usd > 0
    events = env.events(r.run_id)
    assert [e["event"] for e in events] == ["decision", "model_call", "decision", "tool_call"] + ["run"] * RUN_EVENTS
    call = events[1]
    assert call["model"] == "small" and call["status"] == "ok" and call["step"] == "classify"
    assert call["subject"] == {"vendor_region": "EU"} and call["outcome"] == "auto_resolved"
    assert set(call["output"]) == {"label", "confidence"} and call["label"] == "ok"
    assert events[0]["decision"]["effect"] == "allow" and events[0]["decision"]["route"] == "small"
    env.close()
    # the charge reached the durable ledger
    conn = duckdb.connect(str(tmp_path / "pe.duckdb"))
    charged = conn.execute("SELECT sum(amount) FROM budget_usage WHERE scope_key = 'workflow:budgeted' "
                           "AND unit = 'tokens'").fetchone()[0]
    assert charged == r.tokens


def test_escalated_run_survives_a_restart_and_is_approved_by_an_allowed_user(tmp_path, clock, effects):
    wfs = {"pay": pay_workflow("pay", effects)}
    env = Env(tmp_path, clock, wfs)
    r = env.orch.start("pay", {"id": "INV-2", "amount": 25_000}, requested_by="carol")
    assert r.status == "waiting_approval" and r.approval.role == "senior_analyst"
    assert r.approval.gate == "ops.pay.large_payment"
    assert r.approval.deadline_at == (clock.now + timedelta(hours=4)).replace(tzinfo=None)
    assert effects.calls == {}
    env.close()

    env = Env(tmp_path, clock, wfs)  # a new process
    refusals = {
        "carol": "carol requested run .* cannot decide its approval \\(four-eyes",
        "bob": "bob \\(analyst\\) does not hold role senior_analyst",
        "mallory": "unknown user 'mallory'",
    }
    for user, message in refusals.items():
        with pytest.raises(ApprovalRefused, match=message):
            env.orch.approve(r.run_id, user)
    done = env.orch.approve(r.run_id, "alice", note="checked the contract")
    assert (done.status, done.outcome) == ("completed", "approved")
    assert effects.calls == {f"{r.run_id}/pay": 1}
    (approval,) = env.events(r.run_id, "approval")
    assert approval["actor"] == "alice" and approval["requester"] == "carol" and approval["outcome"] == "approved"
    assert approval["note"] == "checked the contract" and approval["role"] == "senior_analyst"
    # the model was not called again on resume: the journal restored its output
    assert len(env.events(r.run_id, "model_call")) == 1
    with pytest.raises(RunError, match="not waiting for approval: it is completed"):
        env.orch.approve(r.run_id, "alice")
    env.close()


def test_rejection_denies_the_step_and_runs_the_fallback(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-3", "amount": 50_000}, requested_by="carol")
    out = env.orch.reject(r.run_id, "alice", note="no contract")
    assert (out.status, out.outcome) == ("rejected", "queued")
    assert "rejected by alice" in out.reason and effects.calls == {}
    assert env.events(r.run_id, "approval")[0]["outcome"] == "rejected"
    env.close()


def test_deadline_expiry_is_recorded_and_applies_else_deny(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-4", "amount": 50_000}, requested_by="carol")
    clock.now += timedelta(hours=3, minutes=59)
    assert env.orch.expire() == []
    clock.now += timedelta(minutes=2)
    (ended,) = env.orch.expire()
    assert (ended.run_id, ended.status, ended.outcome) == (r.run_id, "expired", "queued")
    (record,) = env.events(r.run_id, "approval")
    assert record["outcome"] == "expired" and record["approver"] is None
    with pytest.raises(RunError, match="not waiting for approval: its approval deadline passed"):
        env.orch.approve(r.run_id, "alice")
    assert effects.calls == {}
    env.close()


def test_an_approval_attempt_after_the_deadline_expires_the_run_first(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-5", "amount": 50_000}, requested_by="carol")
    clock.now += timedelta(hours=5)
    with pytest.raises(RunError, match="deadline passed"):
        env.orch.approve(r.run_id, "alice")
    assert env.orch.show(r.run_id)[0].status == "expired"
    env.close()


def test_denied_step_fails_with_the_reason_and_the_fallback_runs(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-6", "amount": 10, "vendor": "Shady Ltd"}, requested_by="carol")
    assert (r.status, r.outcome) == ("denied", "queued")
    assert "ops.pay.no_blocked_vendor" in r.reason and "sanctions" in r.reason
    steps = {s.step: s for s in env.orch.show(r.run_id)[1]}
    assert steps["pay"].status == "denied" and steps["queue"].status == "done"
    assert effects.calls == {}
    env.close()


def test_budget_exhausted_mid_batch_denies_the_following_items(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"budgeted": pay_workflow("budgeted", effects)})
    items = [{"id": f"INV-{i}", "amount": 100} for i in range(12)]
    results = env.orch.run_batch("budgeted", items, requested_by="carol")
    statuses = [r.status for r in results]
    first_denied = statuses.index("denied")
    assert 0 < first_denied < len(items) and set(statuses[first_denied:]) == {"denied"}
    assert all(s == "completed" for s in statuses[:first_denied])
    summary = BatchSummary.of("budgeted", results)
    assert summary.denied == len(items) - first_denied and summary.completed == first_denied
    # the call's estimate is reserved before the call: refused by the budget once it has no room for it,
    # before any decision sees the limit passed (spend never goes over)
    assert all("budget ops.pay.tight has no room" in r.reason for r in results[first_denied:])
    assert sum(r.tokens for r in results) <= 200 and env.ledger.reserved("workflow:budgeted", "tokens") == 0
    denied_decisions = [e for e in env.events(event="decision") if e["decision"]["effect"] == "deny"]
    assert all(any(r["rule"] == "ops.pay.tight" for r in e["decision"]["reasons"]) for e in denied_decisions)
    # one alert when usage passed 'warn at', one when the limit was hit (not one per item)
    alerts = [(a["rule"], a["breach"], a["action"]) for a in env.events(event="alert")]
    assert alerts == [("ops.pay.tight", False, "alert"), ("ops.pay.tight", True, "block")]
    env.close()


def test_budget_exhausted_reroutes_to_the_rule_s_model(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"rerouted": pay_workflow("rerouted", effects)})
    results = env.orch.run_batch("rerouted", [{"id": f"I{i}", "amount": 100} for i in range(12)],
                                 requested_by="carol")
    models = [r.models[0] for r in results]
    switch = models.index("big")
    assert switch > 0 and set(models[:switch]) == {"small"} and set(models[switch:]) == {"big"}
    assert all(r.status == "completed" for r in results)
    assert BatchSummary.of("rerouted", results).models == {"small": switch, "big": 12 - switch}
    env.close()


@pytest.mark.parametrize("fail", ["error", "timeout"])
def test_failing_provider_falls_back_to_the_next_allowed_model(tmp_path, clock, effects, fail):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)},
              profiles={"small": ModelProfile(fail_rate=1.0, fail=fail)})
    r = env.orch.start("pay", {"id": "INV-7", "amount": 100}, requested_by="carol")
    assert r.status == "completed" and r.models == ("big",) and r.fallbacks == 1
    calls = env.events(r.run_id, "model_call")
    assert [(c["model"], c["status"]) for c in calls] == [("small", fail), ("small", fail), ("big", "ok")]
    fallback_decisions = [e for e in env.events(r.run_id, "decision") if e.get("fallback_from")]
    assert fallback_decisions[0]["request"]["resource"]["id"] == "big"
    env.close()


def test_fallback_only_to_models_the_policy_allows(tmp_path, clock, effects):
    wf = pay_workflow("pay", effects, data={"classification": "secret"})
    env = Env(tmp_path, clock, {"pay": wf}, profiles={"small": ModelProfile(fail_rate=1.0)})
    r = env.orch.start("pay", {"id": "INV-8", "amount": 100}, requested_by="carol")
    assert r.status == "failed" and r.outcome == "queued"  # the workflow's fallback took over
    assert "every allowed model failed (small)" in r.reason
    assert [c["model"] for c in env.events(r.run_id, "model_call")] == ["small", "small"]
    env.close()


def test_a_crash_between_side_effect_and_record_never_repeats_the_effect(tmp_path, clock, effects):
    def crash_after_effect(point: str, step: str) -> None:
        if point == "after_effect":
            raise SimulatedCrash(step)

    wfs = {"pay": pay_workflow("pay", effects)}
    env = Env(tmp_path, clock, wfs, faults=crash_after_effect)
    with pytest.raises(SimulatedCrash):
        env.orch.start("pay", {"id": "INV-9", "amount": 100}, requested_by="carol")
    env.crash()
    assert len(effects.calls) == 1
    (run_id,) = effects.calls
    run_id = run_id.split("/")[0]

    env = Env(tmp_path, clock, wfs)
    run, steps, _ = env.orch.show(run_id)  # the journal that led to the payment committed with its intent
    assert run.status == "running" and [(s.step, s.status) for s in steps] == [("classify", "done"), ("pay", "started")]
    (r,) = env.orch.recover()
    assert (r.run_id, r.status) == (run_id, "completed")
    assert effects.calls == {f"{run_id}/pay": 1}  # completed from the receipt, not paid twice
    (tool,) = env.events(run_id, "tool_call")
    assert tool["replayed"] is True
    assert env.orch.resume(run_id).status == "completed"  # resuming a finished run does nothing
    assert env.orch.recover() == []
    env.close()


def test_a_step_with_a_receipt_is_completed_from_it_even_if_it_would_not_run_now(tmp_path, clock, effects):
    def crash_after_effect(point: str, step: str) -> None:
        if point == "after_effect":
            raise SimulatedCrash(step)

    resumed = [False]  # the step's condition reads something that changed (a model, a clock, a flag)
    wf = Workflow("pay", "pay_bot", (
        ToolCall("pay", effect=True, run=effects.pay, when=lambda ctx: not resumed[0],
                 ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", {}, {"amount": 10})),
    ), fallback=ToolCall("queue", ask=lambda ctx: Ask("call", "tool", "ap/review-queue"),
                         run=lambda ctx, key: {"queued": True}))
    env = Env(tmp_path, clock, {"pay": wf}, faults=crash_after_effect)
    with pytest.raises(SimulatedCrash):
        env.orch.start("pay", {"id": "INV-11", "amount": 10}, requested_by="carol")
    env.crash()
    resumed[0] = True
    env = Env(tmp_path, clock, {"pay": wf})
    (r,) = env.orch.recover()
    assert r.status == "completed" and len(effects.calls) == 1
    _, steps, _ = env.orch.show(r.run_id)
    assert [(s.step, s.status) for s in steps] == [("pay", "done")]
    assert [(t["step"], t["replayed"]) for t in env.events(r.run_id, "tool_call")] == [("pay", True)]
    env.close()


def test_a_crash_before_the_receipt_calls_the_tool_again_with_the_same_key(tmp_path, clock):
    seen: list[str] = []

    def flaky_pay(ctx, key: str) -> dict:
        seen.append(key)
        if len(seen) == 1:
            raise SimulatedCrash("killed mid-call")
        return {"ref": key}

    wf = Workflow("pay", "pay_bot", (ToolCall("pay", effect=True, run=flaky_pay,
                                             ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", {},
                                                                 {"amount": 10})),))
    env = Env(tmp_path, clock, {"pay": wf})
    with pytest.raises(SimulatedCrash):
        env.orch.start("pay", {"id": "INV-10", "amount": 10}, requested_by="carol")
    env.crash()
    env = Env(tmp_path, clock, {"pay": wf})
    (r,) = env.orch.recover()
    assert r.status == "completed" and len(seen) == 2 and seen[0] == seen[1] == f"{r.run_id}/pay"
    env.close()


def test_parallel_group_and_a_human_wait_declared_by_the_workflow(tmp_path, clock):
    wf = Workflow("plan", "pay_bot", (
        Parallel("look", (
            DataRead("stock", ask=lambda ctx: Ask("read", "dataset", "scm/inventory"), read=lambda ctx: {"n": 4}),
            ToolCall("quotes", ask=lambda ctx: Ask("call", "tool", "scm/quotes"),
                     run=lambda ctx, key: {"best": "Acme"}),
        )),
        HumanWait("sign_off", role="analyst", within_seconds=3600,
                  ask=lambda ctx: Ask("call", "tool", "scm/orders", context={"n": ctx.out("stock", "n")})),
    ), outcome=lambda ctx: f"ordered from {ctx.out('quotes', 'best')}")
    env = Env(tmp_path, clock, {"plan": wf})
    r = env.orch.start("plan", {"id": "S1"}, requested_by="carol")
    assert r.status == "waiting_approval" and r.approval.gate == "plan.sign_off" and r.approval.role == "analyst"
    with pytest.raises(ApprovalRefused, match="four-eyes"):
        env.orch.approve(r.run_id, "carol")
    done = env.orch.approve(r.run_id, "bob")  # holds analyst
    assert (done.status, done.outcome) == ("completed", "ordered from Acme")
    kinds = [e["event"] for e in env.events(r.run_id)]
    assert kinds.count("data_access") == 1 and kinds.count("tool_call") == 1 and "approval" in kinds
    env.close()


def test_unknown_runs_and_workflows_are_clear_errors(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    with pytest.raises(RunError, match="no run 'r-nope'"):
        env.orch.approve("r-nope", "alice")
    with pytest.raises(RunError, match="unknown workflow 'nope' \\(known: pay\\)"):
        env.orch.start("nope", {}, requested_by="carol")
    env.close()


def test_a_step_matching_two_gates_waits_for_both_roles(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-11", "amount": 70_000}, requested_by="carol")
    gates = {a.gate: a.status for a in env.orch.show(r.run_id)[2]}
    assert gates == {"ops.pay.large_payment": "pending", "ops.pay.huge_payment": "pending"}
    assert "senior_analyst" in r.reason and "role analyst" in r.reason
    half = env.orch.approve(r.run_id, "bob")  # bob holds analyst: decides only the analyst gate
    assert half.status == "waiting_approval" and "senior_analyst" in half.reason
    done = env.orch.approve(r.run_id, "alice")
    assert done.status == "completed" and effects.calls == {f"{r.run_id}/pay": 1}
    assert [a["approver"] for a in env.events(r.run_id, "approval")] == ["bob", "alice"]
    env.close()


def test_rejecting_one_gate_closes_the_others(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    r = env.orch.start("pay", {"id": "INV-12", "amount": 70_000}, requested_by="carol")
    out = env.orch.reject(r.run_id, "bob")
    assert out.status == "rejected"
    gates = {a.gate: (a.status, a.approver) for a in env.orch.show(r.run_id)[2]}
    assert gates == {"ops.pay.huge_payment": ("rejected", "bob"), "ops.pay.large_payment": ("cancelled", None)}
    env.close()


def test_a_bad_item_fails_its_run_with_the_message_and_the_batch_goes_on(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    bad, good = env.orch.run_batch("pay", [{"id": "no-amount"}, {"id": "INV-13", "amount": 5}],
                                   requested_by="carol")
    assert (bad.status, good.status) == ("failed", "completed")
    assert bad.reason == "KeyError: 'amount'"  # the model step failed; the fallback queued the item
    assert env.orch.show(bad.run_id)[0].status == "failed"
    broken = Workflow("broken", "pay_bot", (
        DataRead("read", ask=lambda ctx: Ask("read", "dataset", ctx.item["dataset"]), read=lambda ctx: {}),))
    r = env.orch.start(broken, {"id": "x"}, requested_by="carol")
    assert (r.status, r.reason) == ("failed", "workflow code failed: KeyError: 'dataset'")
    env.close()


def test_nothing_runs_unrecorded_when_the_audit_log_fails(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    env.audit.close()  # the log is gone: the very first decision cannot be recorded
    with pytest.raises(RecordError, match="audit log: .*closed"):
        env.orch.run_batch("pay", [{"id": "INV-14", "amount": 5}], requested_by="carol")
    assert effects.calls == {}
    env.conn.close()


class _BuggySink:
    """An audit sink with a bug in it (not a refusal by the log): ``append`` raises TypeError."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def append(self, event, **kw):
        raise TypeError(f"cannot handle the {event} payload")

    def flush(self) -> None:
        self.log.flush()


def test_a_bug_in_recording_is_not_reported_as_the_log_refusing_the_record(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})
    env.orch.audit = _BuggySink(env.audit)
    with pytest.raises(TypeError, match="cannot handle the .* payload") as err:
        env.orch.run_batch("pay", [{"id": "INV-15", "amount": 5}], requested_by="carol")
    assert not isinstance(err.value, RecordError)
    assert err.traceback[-1].name == "append"  # the traceback reaches the faulty code
    assert any("'decision' audit record" in n for n in err.value.__notes__)  # the first record, not the run's
    assert effects.calls == {}  # still nothing ran unrecorded
    env.orch.record_runs = False  # even with no run record to fail in turn, the bug is not the workflow's
    with pytest.raises(TypeError):
        env.orch.start("pay", {"id": "INV-16", "amount": 5}, requested_by="carol")
    assert effects.calls == {}


def test_a_database_error_from_the_log_is_a_record_error(tmp_path, clock, effects):
    env = Env(tmp_path, clock, {"pay": pay_workflow("pay", effects)})

    class Refusing(_BuggySink):
        def append(self, event, **kw):
            raise duckdb.IOException("disk full")

    env.orch.audit = Refusing(env.audit)
    with pytest.raises(RecordError, match="audit log: disk full"):
        env.orch.run_batch("pay", [{"id": "INV-16", "amount": 5}], requested_by="carol")
    assert effects.calls == {}
