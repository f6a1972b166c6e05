"""The budget ledger with reservations, on the embedded store (DuckDB file, threads)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from policyengine.budgets import InMemoryLedger, window_bounds
from policyengine.store.embedded_ledger import EmbeddedLedger

AT = datetime(2026, 11, 14, 10, 30, tzinfo=UTC)
SCOPE = "workflow:invoice-exceptions"


def hammer(ledger, *, threads: int, limit: float, estimate: float, hold: int = 0) -> tuple[list, list]:
    """``threads`` concurrent reserve calls released together; the first ``hold`` admitted stay held."""
    start = threading.Barrier(threads)
    admitted, held = [], []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        r = ledger.reserve(SCOPE, "tokens", estimate, limit=limit, window="month", at=AT)
        if r is None:
            return
        with lock:
            admitted.append(r)
            keep = len(held) < hold
            if keep:
                held.append(r)
        if not keep:
            ledger.settle(r, estimate)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return admitted, held


def test_400_concurrent_threads_admit_exactly_the_budget(tmp_path):
    ledger = EmbeddedLedger(tmp_path / "state.duckdb")
    admitted, held = hammer(ledger, threads=400, limit=10_000, estimate=1_000, hold=3)
    assert len(admitted) == 10
    month = window_bounds("month", AT)
    assert ledger.usage(SCOPE, "tokens", *month) == 7_000
    assert ledger.reserved(SCOPE, "tokens") == 3_000
    assert ledger.reserve(SCOPE, "tokens", 1, limit=10_000, at=AT) is None

    # Holds whose callers never come back are charged at their estimate by expiry (their calls may have
    # happened), not before.
    assert ledger.expire(AT + timedelta(seconds=1)) == 0
    assert ledger.expire(held[0].expires_at) == 3
    assert ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.usage(SCOPE, "tokens", *month) == 10_000
    assert ledger.reserve(SCOPE, "tokens", 1, limit=10_000, at=AT) is None
    ledger.close()

    # Holds are the process's calls in flight: a new process starts with none, the spend is durable.
    reopened = EmbeddedLedger(tmp_path / "state.duckdb")
    assert reopened.reserved(SCOPE, "tokens") == 0
    assert reopened.usage(SCOPE, "tokens", *month) == 10_000
    assert reopened.reserve(SCOPE, "tokens", 1, limit=10_000, at=AT) is None
    reopened.close()


@pytest.mark.parametrize(("spent", "held", "estimate", "admitted"), [
    (0, 0, 10_000, True),       # exactly the limit
    (0, 0, 10_001, False),
    (9_000, 0, 1_000, True),
    (9_000, 500, 1_000, False),  # a live hold counts
    (9_500, 0, 501, False),
])
def test_reserve_admits_only_within_the_limit(tmp_path, spent, held, estimate, admitted):
    ledger = EmbeddedLedger(tmp_path / "s.duckdb")
    if spent:
        ledger.charge(SCOPE, "tokens", spent, AT)
    if held:
        assert ledger.reserve(SCOPE, "tokens", held, limit=10_000, at=AT) is not None
    assert (ledger.reserve(SCOPE, "tokens", estimate, limit=10_000, at=AT) is not None) is admitted


def test_settle_charges_actual_and_release_charges_nothing(tmp_path):
    ledger = EmbeddedLedger(tmp_path / "s.duckdb")
    a = ledger.reserve(SCOPE, "tokens", 1_000, limit=5_000, window="day", at=AT)
    b = ledger.reserve(SCOPE, "tokens", 1_000, limit=5_000, window="day", at=AT)
    ledger.settle(a, 640)
    ledger.release(b)
    assert ledger.reserved(SCOPE, "tokens") == 0
    for window in ("hour", "day", "month"):
        assert ledger.usage(SCOPE, "tokens", *window_bounds(window, AT)) == 640
    # An expired hold is charged at its estimate (its call may have happened: nothing is lost), and a settle
    # that comes after that adds nothing (charged once).
    c = ledger.reserve(SCOPE, "tokens", 1_000, limit=5_000, window="day", at=AT)
    assert ledger.expire(c.expires_at) == 1
    assert ledger.usage(SCOPE, "tokens", *window_bounds("day", AT)) == 1_640
    ledger.settle(c, 900)
    assert ledger.usage(SCOPE, "tokens", *window_bounds("day", AT)) == 1_640


def test_running_totals_survive_reopen_and_match_hour_sums(tmp_path):
    path = tmp_path / "s.duckdb"
    ledger = EmbeddedLedger(path)
    memory = InMemoryLedger()
    hours = [AT - timedelta(hours=h) for h in range(0, 24 * 40, 7)]
    for i, t in enumerate(hours):
        ledger.charge(SCOPE, "USD", i + 0.25, t)
        memory.charge(SCOPE, "USD", i + 0.25, t)
    ledger.close()
    ledger = EmbeddedLedger(path)
    for window in ("hour", "day", "month"):
        for t in hours[::5]:
            bounds = window_bounds(window, t)
            assert ledger.usage(SCOPE, "USD", *bounds) == pytest.approx(memory.usage(SCOPE, "USD", *bounds))
    # A range that is not a calendar window sums hours.
    start = AT - timedelta(days=3, hours=5)
    assert ledger.usage(SCOPE, "USD", start, AT) == pytest.approx(memory.usage(SCOPE, "USD", start, AT))
    assert ledger.usage(SCOPE, "USD", start) == pytest.approx(memory.usage(SCOPE, "USD", start))
