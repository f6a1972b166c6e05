"""Every budget ledger refuses amounts that are not usage: a negative charge gives budget back, NaN passes
every check after it. A settle reporting such a usage charges the hold's estimate (the call happened)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from policyengine.budgets import InMemoryLedger, window_bounds
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.store import holds
from policyengine.store.embedded_ledger import EmbeddedLedger
from policyengine.store.holds import MemoryReservingLedger

AT = datetime(2026, 11, 14, 10, 30, tzinfo=UTC)
SCOPE = "workflow:invoice-exceptions"
MONTH = window_bounds("month", AT)
UNUSABLE = [-1_000, -0.5, float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal(-1), "12", None, True]


@pytest.fixture(params=["memory", "embedded", "buffered", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryReservingLedger()
    elif request.param == "embedded":
        ledger = EmbeddedLedger(tmp_path / "state.duckdb")
        yield ledger
        ledger.close()
    elif request.param == "buffered":
        yield BufferedLedger(InMemoryLedger())
    else:
        from policyengine.store.postgres import PostgresLedger, connect_pool
        pool = connect_pool(request.getfixturevalue("postgres_url"), size=2)
        yield PostgresLedger(pool)
        pool.close()


def spent(ledger: Any) -> float:
    if isinstance(ledger, BufferedLedger):
        ledger.flush()
        return ledger.durable.usage(SCOPE, "tokens", *MONTH)
    return ledger.usage(SCOPE, "tokens", *MONTH)


@pytest.mark.parametrize("amount", UNUSABLE)
def test_a_charge_or_a_hold_of_no_usage_amount_is_refused_and_changes_nothing(ledger, amount):
    ledger.charge(SCOPE, "tokens", 900, AT)
    with pytest.raises(ValueError, match="is not a usage amount"):
        ledger.charge(SCOPE, "tokens", amount, AT)
    with pytest.raises(ValueError, match="is not a usage amount"):
        ledger.reserve(SCOPE, "tokens", amount, limit=1_000, at=AT)
    with pytest.raises(ValueError, match="is not a usage amount"):
        ledger.reserve(SCOPE, "tokens", 10, limit=amount, at=AT)
    assert spent(ledger) == 900 and ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.reserve(SCOPE, "tokens", 101, limit=1_000, at=AT) is None  # still 100 left, not more


@pytest.mark.parametrize("usage", UNUSABLE)
def test_a_settle_reporting_no_usage_amount_charges_the_estimate_and_says_so(ledger, usage):
    r = ledger.reserve(SCOPE, "tokens", 400, limit=1_000, at=AT)
    with pytest.raises(ValueError, match=r"usage .* is not a usage amount .*estimate of 400 tokens was charged"):
        ledger.settle(r, usage)
    assert spent(ledger) == 400 and ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.reserve(SCOPE, "tokens", 601, limit=1_000, at=AT) is None


def test_a_call_settled_with_no_usage_amount_charges_every_hold_of_the_call(ledger):
    """``holds.settle`` deals with every hold of a call before it raises: none is left held or given back."""
    budget = type("Budget", (), {})
    tokens = type("Limit", (), {"unit": "tokens", "amount": 1_000, "window": "month"})
    usd = type("Limit", (), {"unit": "USD", "amount": 5.0, "window": "day"})
    budget.id, budget.scope_key, budget.limits = "b", SCOPE, (tokens, usd)
    hold = holds.reserve(ledger, [budget], 300, 0.25, "USD", at=AT)
    with pytest.raises(ValueError, match="usage -5"):
        holds.settle(ledger, hold, -5, -1.0)
    assert spent(ledger) == 300 and ledger.reserved(SCOPE, "tokens") == 0 and ledger.reserved(SCOPE, "USD") == 0
