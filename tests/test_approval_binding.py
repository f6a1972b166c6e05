"""Approvals inside a request count only for that request and only for a while (no replay).

The same payment request is evaluated with one approval entry per row: a
replayed approval (from 2001, from another run, for another request) denies the
request with a reason naming the entry; a bound, fresh one opens the gate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_orchestrator_runner import RULES

from policyengine.approval_binding import request_hash
from policyengine.engine import load_policy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GATE = "ops.pay.large_payment"
REQUEST = {"principal": {"id": "carol", "roles": ["ap_agent"]}, "action": "approve_payment",
           "resource": {"kind": "tool", "id": "erp/pay"}, "context": {"amount": 20_000, "run_id": "r-1"}}
HASH = request_hash(REQUEST)


def ts(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


CASES = [
    # case, binding fields of the approval, effect, error fragment (None: no error)
    ("bound to the run, given an hour ago", {"run_id": "r-1", "ts": ts(-timedelta(hours=1))}, "allow", None),
    ("bound to the request hash", {"request_hash": HASH, "ts": ts(-timedelta(days=6))}, "allow", None),
    ("replayed from 2001", {"run_id": "r-1", "ts": "2001-01-01T00:00:00Z"}, "deny", "approvals[0]: stale"),
    ("eight days old", {"run_id": "r-1", "ts": ts(-timedelta(days=8))}, "deny", "more than 7 days before"),
    ("given tomorrow", {"run_id": "r-1", "ts": ts(timedelta(days=1))}, "deny", "after the decision time"),
    ("from another run", {"run_id": "r-2", "ts": ts(timedelta(0))}, "deny", "given for run 'r-2', not this"),
    ("for another request", {"request_hash": request_hash({**REQUEST, "action": "x"}), "ts": ts(timedelta(0))},
     "deny", "request_hash does not match"),
    ("bound to nothing", {"ts": ts(timedelta(0))}, "deny", "not bound to this request"),
    ("without a time", {"run_id": "r-1"}, "deny", "approvals[0].ts: missing"),
    ("a time that is no time", {"run_id": "r-1", "ts": "yesterday"}, "deny", "approvals[0].ts: missing or not"),
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "pay.policy"
    rules.write_text(RULES)
    return load_policy([rules])


@pytest.mark.parametrize(("case", "binding", "effect", "error"), CASES, ids=[c[0] for c in CASES])
def test_approvals_are_bound_to_their_request_and_a_time_window(policy, case, binding, effect, error):
    approval = {"gate": GATE, "approver": "alice", "roles": ["senior_analyst"], **binding}
    decision = policy.evaluate({**REQUEST, "approvals": [approval]}, now=NOW)
    assert decision.effect == effect
    if error is None:
        assert decision.errors == ()
    else:
        assert any(error in e for e in decision.errors), decision.errors


def test_without_approvals_the_gate_escalates(policy):
    assert policy.evaluate(REQUEST, now=NOW).effect == "escalate"


def test_the_hash_ignores_the_approvals_and_key_order():
    reordered = dict(reversed(list(REQUEST.items())))
    assert request_hash({**reordered, "approvals": [{"gate": GATE}]}) == HASH
    assert request_hash({**REQUEST, "context": {"amount": 20_001, "run_id": "r-1"}}) != HASH
