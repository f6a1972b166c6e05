"""Budget estimates must be usable numbers, windows have an end, obligations are unique."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from policyengine import DuckDBLedger, InMemoryLedger, load_policy
from policyengine.budgets import window_end, window_start

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 15, 42, 7, tzinfo=UTC)

POLICY = """
package spend
role analyst
role finance_lead

model frontier
    cost 10 USD per 1M tokens
model cheap
    cost 0.10 USD per 1M tokens

rule analysts_invoke
    allow role analyst to invoke model "*"

budget analyst_hourly
    for role analyst
    limit 1000 tokens per hour
    on exceed route to model cheap

budget frontier_daily
    for model frontier
    limit 1 USD per day
    on exceed deny

budget wf_monthly
    for workflow "wf-1"
    limit 10_000 tokens per month
    on exceed escalate to role finance_lead
"""


@pytest.fixture
def policy_dir(tmp_path):
    (tmp_path / "spend.policy").write_text(POLICY)
    return tmp_path


def invoke(**context):
    return {"principal": {"id": "ann", "roles": ["analyst"]}, "action": "invoke",
            "resource": {"kind": "model", "id": "frontier"}, "context": {"workflow": "wf-1", **context}}


@pytest.fixture(params=["memory", "duckdb"])
def charged(request, tmp_path):
    """The QA setup: 9,950 tokens and 0.85 USD already charged this hour."""
    ledger = InMemoryLedger() if request.param == "memory" else DuckDBLedger(tmp_path / "l.duckdb")
    for scope in ("role:analyst", "model:frontier", "workflow:wf-1"):
        ledger.charge(scope, "tokens", 9_950, NOW)
        ledger.charge(scope, "USD", 0.85, NOW)
    return ledger


ESTIMATES = [
    # case, context, effect, error (None: well formed)
    ("small estimate escalates", {"tokens": 100}, "escalate", None),
    ("zero tokens stays under the monthly limit", {"tokens": 0}, "allow", None),
    ("negative tokens", {"tokens": -5_000_000}, "deny", "context.tokens: must be a non-negative number"),
    ("negative float tokens", {"tokens": -0.5}, "deny", "context.tokens: must be a non-negative number"),
    ("text tokens", {"tokens": "lots"}, "deny", "context.tokens: must be a non-negative number"),
    ("bool tokens", {"tokens": True}, "deny", "context.tokens: must be a non-negative number"),
    ("NaN tokens", {"tokens": math.nan}, "deny", "context.tokens: must be a non-negative number"),
    ("infinite tokens", {"tokens": math.inf}, "deny", "context.tokens: must be a non-negative number"),
    ("list tokens", {"tokens": [1]}, "deny", "context.tokens: must be a non-negative number"),
    ("negative cost", {"tokens": 100, "cost_usd": -3}, "deny", "context.cost_usd: must be a non-negative number"),
    ("text cost", {"tokens": 100, "cost_usd": "1"}, "deny", "context.cost_usd: must be a non-negative number"),
    ("NaN cost", {"tokens": 100, "cost_usd": math.nan}, "deny", "context.cost_usd: must be a non-negative number"),
    ("infinite cost", {"tokens": 100, "cost_usd": -math.inf}, "deny",
     "context.cost_usd: must be a non-negative number"),
]


@pytest.mark.parametrize("case,context,effect,error", ESTIMATES, ids=[e[0] for e in ESTIMATES])
def test_estimates_must_be_non_negative_finite_numbers(policy_dir, charged, case, context, effect, error):
    decision = load_policy(policy_dir, ledger=charged).evaluate(invoke(**context), now=NOW)
    assert decision.effect == effect
    if error is None:
        assert decision.errors == ()
    else:
        assert decision.errors == (error,)
        assert decision.reasons[0].rule == "<request>"
        assert error in decision.reasons[0].message


def test_estimate_fields_are_not_checked_without_budgets(tmp_path):
    (tmp_path / "p.policy").write_text("package p\nrole analyst\nrule r\n    allow role analyst to invoke model \"*\"\n")
    decision = load_policy(tmp_path).evaluate(invoke(tokens="lots"), now=NOW)
    assert decision.effect == "allow"


def test_obligations_are_unique_when_a_reroute_and_an_escalation_ask_for_the_same_approval(policy_dir, charged):
    decision = load_policy(policy_dir, ledger=charged).evaluate(invoke(tokens=100), now=NOW)
    assert (decision.effect, decision.route) == ("escalate", "cheap")
    kinds = [(o.kind, getattr(o, "gate", None)) for o in decision.obligations]
    assert kinds == [("approval_required", "spend.wf_monthly")]
    assert len(set(decision.obligations)) == len(decision.obligations)


WINDOW_ENDS = [
    ("hour", datetime(2026, 1, 15, 9, 59, 59, tzinfo=UTC), datetime(2026, 1, 15, 10, tzinfo=UTC)),
    ("hour", datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC), datetime(2026, 1, 15, 11, tzinfo=UTC)),
    ("hour", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ("day", datetime(2026, 2, 28, 12, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ("day", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ("month", datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
    ("month", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ("month", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize("window,now,end", WINDOW_ENDS)
def test_window_end_is_the_next_window_start(window, now, end):
    assert window_end(window, now) == end
    assert window_start(window, end) == end


CHARGE_AT = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
PAST_NOW = [
    # case, window, now, counted
    ("hour before the charge", "hour", datetime(2026, 1, 15, 9, 59, 59, tzinfo=UTC), 0),
    ("hour of the charge", "hour", datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC), 500),
    ("hour after the charge", "hour", datetime(2026, 1, 15, 11, 0, 0, tzinfo=UTC), 0),
    ("day before", "day", datetime(2026, 1, 14, 23, 59, 59, tzinfo=UTC), 0),
    ("same day, earlier hour", "day", datetime(2026, 1, 15, 0, 0, tzinfo=UTC), 500),
    ("month before (year end)", "month", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), 0),
    ("same month", "month", datetime(2026, 1, 1, tzinfo=UTC), 500),
    ("next month", "month", datetime(2026, 2, 1, tzinfo=UTC), 0),
]


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
@pytest.mark.parametrize("case,window,now,counted", PAST_NOW, ids=[p[0] for p in PAST_NOW])
def test_usage_outside_the_window_does_not_count(tmp_path, kind, case, window, now, counted):
    ledger = InMemoryLedger() if kind == "memory" else DuckDBLedger(tmp_path / "l.duckdb")
    ledger.charge("role:analyst", "tokens", 500, CHARGE_AT)
    assert ledger.usage("role:analyst", "tokens", window_start(window, now), window_end(window, now)) == counted


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_a_past_now_does_not_see_later_usage(policy_dir, tmp_path, kind):
    ledger = InMemoryLedger() if kind == "memory" else DuckDBLedger(tmp_path / "l.duckdb")
    ledger.charge("role:analyst", "tokens", 5_000, CHARGE_AT)
    policy = load_policy(policy_dir, ledger=ledger)
    request = invoke(tokens=100)
    before = policy.evaluate(request, now=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert (before.effect, before.route) == ("allow", None)
    just_before = policy.evaluate(request, now=datetime(2026, 1, 15, 9, 59, 59, tzinfo=UTC))
    assert (just_before.effect, just_before.route) == ("allow", None)
    during = policy.evaluate(request, now=CHARGE_AT)
    assert (during.effect, during.route) == ("allow", "cheap")


def test_a_ledger_without_window_end_still_works(policy_dir):
    class OldLedger:
        def __init__(self):
            self.inner = InMemoryLedger()

        def usage(self, scope_key, unit, window_start):
            return self.inner.usage(scope_key, unit, window_start)

        def charge(self, scope_key, unit, amount, at=None):
            self.inner.charge(scope_key, unit, amount, at)

    ledger = OldLedger()
    ledger.charge("role:analyst", "tokens", 5_000, NOW)
    decision = load_policy(policy_dir, ledger=ledger).evaluate(invoke(tokens=100), now=NOW)
    assert (decision.effect, decision.route) == ("allow", "cheap")


def test_decision_json_is_strict_json_for_huge_estimates(policy_dir, charged):
    def refuse(name):
        raise ValueError(name)

    for tokens in (1e308, 10**300, 1.7e308):
        decision = load_policy(policy_dir, ledger=charged).evaluate(invoke(tokens=tokens), now=NOW)
        json.loads(decision.to_json(), parse_constant=refuse)
