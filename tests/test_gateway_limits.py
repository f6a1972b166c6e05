"""Admission: all-or-nothing budget reservations, in the gateway's in-process ledger and the store's DuckDB one."""

from __future__ import annotations

import threading

import duckdb
import pytest

from policyengine.engine import load_policy
from policyengine.gateway.limits import MemoryReservingLedger, release, reserve, settle
from policyengine.store.embedded_ledger import EmbeddedLedger

POLICY = """\
package limits.test
role caller
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1000 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
budget tokens_budget
    for role caller
    limit 1_000 tokens per month
    on exceed deny
budget money_budget
    for model small
    limit 0.5 USD per day
    on exceed deny
"""
REQUEST = {"principal": {"id": "bob", "roles": ["caller"]}, "action": "invoke",
           "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 100}}


@pytest.fixture(params=["memory", "duckdb"])
def policy_and_ledger(tmp_path, request):  # noqa: ANN001, ANN201
    """The gateway's in-process ledger and the store's DuckDB one: the same contract."""
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    ledger = MemoryReservingLedger() if request.param == "memory" else EmbeddedLedger(duckdb.connect(":memory:"))
    yield load_policy([str(tmp_path / "p.policy")], ledger=ledger), ledger
    ledger.close()


def test_reservation_holds_every_limit_or_none(policy_and_ledger) -> None:  # noqa: ANN001
    policy, ledger = policy_and_ledger
    budgets = policy.budgets_for(REQUEST)
    assert {b.id for b in budgets} == {"limits.test.tokens_budget", "limits.test.money_budget"}
    first = reserve(ledger, budgets, 400, 0.4, "USD")
    assert first.refused_by is None and len(first.reservations) == 2
    refused = reserve(ledger, budgets, 400, 0.4, "USD")  # tokens fit (800), money does not (0.8 > 0.5)
    assert refused.refused_by == "limits.test.money_budget" and refused.reservations == ()
    assert ledger.reserved(budgets[0].scope_key, "tokens") + ledger.reserved(budgets[1].scope_key, "tokens") == 400
    release(ledger, first)
    assert ledger.reserved(budgets[0].scope_key, "tokens") + ledger.reserved(budgets[1].scope_key, "tokens") == 0
    second = reserve(ledger, budgets, 400, 0.4, "USD")
    settle(ledger, second, 300, 0.3)
    assert policy.evaluate({**REQUEST, "context": {"tokens": 701, "cost_usd": 0}}).effect == "deny"  # 300 + 701 > 1000
    assert policy.evaluate({**REQUEST, "context": {"tokens": 700, "cost_usd": 0}}).effect == "allow"


def test_concurrent_reservations_never_exceed_the_limit(policy_and_ledger) -> None:  # noqa: ANN001
    policy, ledger = policy_and_ledger
    budgets = [b for b in policy.budgets_for(REQUEST) if b.id == "limits.test.tokens_budget"]
    admitted: list[int] = []

    def worker() -> None:
        for _ in range(10):
            hold = reserve(ledger, budgets, 30, 0, None)
            if hold.refused_by is None:
                settle(ledger, hold, 30, 0)
                admitted.append(30)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 990  # 33 calls of 30 fit in 1,000; the 34th never does


def test_expired_holds_are_charged_at_their_estimate(policy_and_ledger) -> None:  # noqa: ANN001
    from datetime import datetime, timedelta, timezone

    from policyengine.budgets import window_bounds

    _, ledger = policy_and_ledger
    at = datetime(2026, 12, 4, 12, tzinfo=timezone.utc)
    held = ledger.reserve("s", "tokens", 900, limit=1000, at=at, ttl=timedelta(minutes=1))
    assert held is not None
    assert ledger.reserve("s", "tokens", 200, limit=1000, at=at) is None
    # a caller that never settled may have made its call: its hold is charged, not given back
    assert ledger.expire(at + timedelta(minutes=2)) == 1
    assert ledger.reserved("s", "tokens") == 0
    assert ledger.reserve("s", "tokens", 200, limit=1000, at=at + timedelta(minutes=2)) is None
    ledger.settle(held, 50)  # a settle arriving after expiry charges nothing more
    assert ledger.usage("s", "tokens", *window_bounds("month", at)) == 900
