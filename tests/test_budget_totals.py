"""Running budget totals equal a full scan of every charge, for every ledger the engine reads.

Many charges at random times over fourteen months (several scopes and units,
amounts that add up exactly in binary) go to the in-memory ledger, the embedded
DuckDB ledger (also after reopening the file) and the orchestrator's buffered
ledger (before and after a flush); every calendar hour, day and month read from
them, through ``usage`` and through the engine's direct ``window_total``,
must equal the sum of the charges inside ``[start, end)``. A budgeted decision
read from running totals must equal one read from a ledger that scans its
whole history.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from policyengine import InMemoryLedger, load_policy
from policyengine.budgets import WINDOWS, window_bounds, window_reader
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.store.embedded_ledger import EmbeddedLedger

T0 = datetime(2025, 12, 20, 0, 0, tzinfo=UTC)
SCOPES = ["model:small", "workflow:w", "role:clerk"]
UNITS = ["tokens", "USD"]


class ScanLedger:
    """The reference: every charge kept, every read a scan (what running totals replace)."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, str, float, datetime]] = []

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        self.charges.append((scope_key, unit, float(amount), at))

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        return sum(a for k, u, a, at in self.charges
                   if k == scope_key and u == unit and window_start <= at and (window_end is None or at < window_end))


def random_charges(rng: random.Random, count: int) -> list[tuple[str, str, float, datetime]]:
    minutes = 60 * 24 * 430
    return [(rng.choice(SCOPES), rng.choice(UNITS), rng.randrange(1, 400) / 4,
             T0 + timedelta(minutes=rng.randrange(minutes), seconds=rng.randrange(60))) for _ in range(count)]


def probes(rng: random.Random, charges, count: int) -> list[datetime]:
    """Times to read at: at charges (so windows hold some) and anywhere in the period."""
    return [rng.choice(charges)[3] if i % 2 else T0 + timedelta(hours=rng.randrange(24 * 440)) for i in range(count)]


def assert_totals_match(ledger, reference: ScanLedger, times) -> int:
    read = window_reader(ledger)
    checked = 0
    for at in times:
        for window in WINDOWS:
            start, end = window_bounds(window, at)
            for scope in SCOPES:
                for unit in UNITS:
                    expected = reference.usage(scope, unit, start, end)
                    assert ledger.usage(scope, unit, start, end) == expected, (scope, unit, window, start)
                    if read is not None:
                        assert read(scope, unit, window, start) == expected, (scope, unit, window, start)
                    checked += expected > 0
    odd = times[0] - timedelta(days=3, hours=5)  # not a calendar window: summed from hours
    for scope in SCOPES:
        assert ledger.usage(scope, "USD", odd, times[0]) == reference.usage(
            scope, "USD", window_bounds("hour", odd)[0], window_bounds("hour", times[0])[0])
    return checked


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 400))
def test_in_memory_totals_equal_a_full_scan(seed, count):
    rng = random.Random(seed)
    charges = random_charges(rng, count)
    ledger, reference = InMemoryLedger(), ScanLedger()
    assert window_reader(ledger) is not None  # the engine reads its running totals directly
    for scope, unit, amount, at in charges:
        ledger.charge(scope, unit, amount, at)
        reference.charge(scope, unit, amount, window_bounds("hour", at)[0])
    assert_totals_match(ledger, reference, probes(rng, charges, 12))


def test_embedded_totals_equal_a_full_scan_and_survive_reopen(tmp_path):
    rng = random.Random(16)
    charges = random_charges(rng, 600)
    path = tmp_path / "ledger.duckdb"
    ledger, reference = EmbeddedLedger(path), ScanLedger()
    with ThreadPoolExecutor(4) as pool:
        for i in range(0, len(charges), 6):
            ledger.charge(*charges[i])  # committed alone
            block = charges[i + 1:i + 6]  # charged at once from threads: the group commit writes them together
            list(pool.map(lambda charge: ledger.charge(*charge), block))
            for scope, unit, amount, at in charges[i:i + 6]:
                reference.charge(scope, unit, amount, window_bounds("hour", at)[0])
            if i == 300:
                assert_totals_match(ledger, reference, probes(rng, charges[:i + 6], 6))  # cache filled midway
    times = probes(rng, charges, 20)
    assert assert_totals_match(ledger, reference, times) > 50
    ledger.close()
    reopened = EmbeddedLedger(path)  # read back from the tables, no cache
    assert assert_totals_match(reopened, reference, times) > 50
    reopened.close()


def test_buffered_totals_equal_a_full_scan_before_and_after_flush(tmp_path):
    rng = random.Random(23)
    charges = random_charges(rng, 500)
    durable = EmbeddedLedger(tmp_path / "ledger.duckdb")
    ledger, reference = BufferedLedger(durable), ScanLedger()
    times = probes(rng, charges, 10)
    for i, (scope, unit, amount, at) in enumerate(charges):
        ledger.charge(scope, unit, amount, at)
        reference.charge(scope, unit, amount, window_bounds("hour", at)[0])
        if i in (100, 250):
            assert_totals_match(ledger, reference, times)  # pending on top of cached durable reads
        if i == 200:
            ledger.flush()
    assert_totals_match(ledger, reference, times)
    ledger.flush()
    assert assert_totals_match(ledger, reference, times) > 20
    assert assert_totals_match(durable, reference, times) > 20
    durable.close()


POLICY = """
package shop
role clerk
model small
    region "eu-west-1" hosting internal
    cost 2 USD per 1M tokens
rule clerks_invoke
    allow role clerk to invoke model "*"
budget hourly
    for model small
    limit 3000 tokens per hour
    limit 40 USD per month
    warn at 10%
    on exceed deny
budget daily_clerks
    for role clerk
    limit 20000 tokens per day
    warn at 5%
    on exceed deny
"""


class UsageOnly:
    """A ledger with nothing but ``usage`` (as third-party ledgers are): the engine's general path."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def usage(self, scope_key, unit, window_start, window_end=None):
        return self.inner.usage(scope_key, unit, window_start, window_end)


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_budgeted_decisions_from_running_totals_equal_those_from_a_scan(tmp_path, kind):
    (tmp_path / "shop.policy").write_text(POLICY)
    ledger = InMemoryLedger() if kind == "memory" else EmbeddedLedger(tmp_path / "l.duckdb")
    reference = ScanLedger()
    fast, slow = load_policy(tmp_path, ledger=ledger), load_policy(tmp_path, ledger=UsageOnly(reference))
    assert fast._evaluator._window_total is not None and slow._evaluator._window_total is None
    rng = random.Random(4)
    request = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": "invoke",
               "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 500}}
    effects = set()
    now = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    for _ in range(120):
        now += timedelta(minutes=rng.randrange(1, 200))
        decision = fast.evaluate(request, now=now)
        assert decision == slow.evaluate(request, now=now), now
        effects.add(decision.effect)
        if decision.allowed:
            tokens = rng.randrange(100, 900)
            cost = tokens / 1024  # exact in binary: totals summed in any order agree to the last bit
            for scope in fast.charge(request, tokens=tokens, cost=cost, at=now):
                reference.charge(scope, "tokens", float(tokens), window_bounds("hour", now)[0])
                reference.charge(scope, "USD", cost, window_bounds("hour", now)[0])
    assert effects == {"allow", "deny"}  # both sides of the limits were reached


def test_a_subclass_that_reads_usage_its_own_way_is_not_read_through_window_total():
    class Doubled(InMemoryLedger):
        def usage(self, scope_key, unit, window_start, window_end=None):
            return 2 * super().usage(scope_key, unit, window_start, window_end)

    assert window_reader(Doubled()) is None
    assert window_reader(InMemoryLedger()) is not None
