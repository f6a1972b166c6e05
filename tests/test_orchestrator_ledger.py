"""BufferedLedger.flush when the durable ledger fails partway: nothing lost, nothing charged twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policyengine.budgets import InMemoryLedger
from policyengine.orchestrator.ledger import BufferedLedger

START = datetime(2026, 11, 24, tzinfo=UTC)


class FlakyLedger(InMemoryLedger):
    """A durable ledger (our own ``BudgetLedger`` interface) whose ``fail_at``-th charge raises, once."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    def charge(self, scope_key, unit, amount, at=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk full")
        super().charge(scope_key, unit, amount, at)


def _charges():
    return [(f"model:m{i % 3}", "tokens" if i % 2 else "USD", float(i + 1), START + timedelta(hours=i))
            for i in range(10)]


@pytest.mark.parametrize("fail_at", [1, 4, 10])
def test_a_failed_write_keeps_the_unwritten_charges_and_a_retry_writes_each_once(fail_at):
    ref, durable = InMemoryLedger(), FlakyLedger(fail_at)
    ledger = BufferedLedger(durable)
    scopes = {(k, u) for k, u, _, _ in _charges()}
    for k, u in scopes:  # cache the bases, so the flush also has to fold charges into them
        ledger.usage(k, u, START)
    for k, u, amount, at in _charges():
        ref.charge(k, u, amount, at)
        ledger.charge(k, u, amount, at)

    with pytest.raises(OSError, match="disk full"):
        ledger.flush()
    for k, u in scopes:  # what the ledger reports is unchanged by the failure
        assert ledger.usage(k, u, START) == ref.usage(k, u, START)
    assert durable.calls == fail_at

    ledger.flush()  # the durable ledger works again
    for k, u in scopes:
        assert durable.usage(k, u, START) == ref.usage(k, u, START)  # each charge written exactly once
        assert ledger.usage(k, u, START) == ref.usage(k, u, START)
    calls = durable.calls
    ledger.flush()  # nothing left pending
    assert durable.calls == calls


def test_charges_made_after_a_failed_flush_are_kept_with_the_unwritten_ones():
    durable = FlakyLedger(1)
    ledger = BufferedLedger(durable)
    ledger.charge("model:m", "tokens", 5, START)
    with pytest.raises(OSError):
        ledger.flush()
    ledger.charge("model:m", "tokens", 7, START)
    assert ledger.usage("model:m", "tokens", START) == 12
    ledger.flush()
    assert durable.usage("model:m", "tokens", START) == 12
    assert ledger.usage("model:m", "tokens", START) == 12
