"""The budget ledger on PostgreSQL, shared by several processes (a real server started by the tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from policyengine.budgets import window_bounds
from policyengine.store.postgres import PostgresLedger, connect_pool

pytestmark = pytest.mark.postgres

SCOPE = "workflow:invoice-exceptions"

# One worker process: N concurrent requests (threads released together), each
# reserving 1,000 tokens of a 10,000-token monthly budget and settling 1,000.
# With "hold" it first takes one reservation, says so, waits for "go", and
# never settles: it is the process the test kills with SIGKILL.
WORKER = r"""
import json, sys, threading
from policyengine.store.postgres import PostgresLedger, connect_pool
url, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
ledger = PostgresLedger(connect_pool(url, size=8))
ask = lambda: ledger.reserve("workflow:invoice-exceptions", "tokens", 1000, limit=10000, window="month")
if hold:
    print("held" if ask() else "refused", flush=True)
    sys.stdin.readline()
gate, lock, admitted = threading.Barrier(n), threading.Lock(), []
def call():
    gate.wait()
    r = ask()
    if r is not None:
        if not hold:
            ledger.settle(r, 1000)
        with lock:
            admitted.append(r.id)
threads = [threading.Thread(target=call) for _ in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"admitted": len(admitted)}), flush=True)
if hold:
    sys.stdin.readline()  # holds its reservations until killed (or until the test's end closes stdin)
"""


def spawn(url: str, n: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, str(n), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_8_processes_x_50_requests_admit_exactly_10_and_a_killed_process_leaks_nothing(postgres_url):
    victim = spawn(postgres_url, 49, "hold")
    try:
        assert victim.stdout.readline().strip() == "held"
        others = [spawn(postgres_url, 50, "settle") for _ in range(7)]
        victim.stdin.write("go\n")
        victim.stdin.flush()
        counts = []
        for p in others:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            counts.append(json.loads(out)["admitted"])
        victim_count = 1 + json.loads(victim.stdout.readline())["admitted"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    assert victim.returncode == -signal.SIGKILL
    assert victim_count + sum(counts) == 10  # 400 requests, room for exactly 10
    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    month = window_bounds("month", datetime.now(UTC))
    spent = ledger.usage(SCOPE, "tokens", *month)
    assert spent == 1000 * sum(counts) <= 10_000
    assert ledger.reserved(SCOPE, "tokens") == 1000 * victim_count  # the killed process's holds remain...
    assert ledger.reserve(SCOPE, "tokens", 1000, limit=10_000) is None
    later = datetime.now(UTC) + timedelta(minutes=5, seconds=1)
    assert ledger.expire(later) == victim_count  # ...until expiry charges them at their estimate
    assert ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.usage(SCOPE, "tokens", *month) == 10_000  # the killed process's calls may have happened
    assert ledger.reserve(SCOPE, "tokens", 1, limit=10_000) is None
    pool.close()


AT = datetime(2026, 11, 14, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(("spent", "held", "estimate", "admitted"), [
    (0, 0, 10_000, True),
    (0, 0, 10_001, False),
    (9_000, 0, 1_000, True),
    (9_000, 500, 1_000, False),
])
def test_reserve_admits_only_within_the_limit(postgres_url, spent, held, estimate, admitted):
    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    if spent:
        ledger.charge(SCOPE, "tokens", spent, AT)
    if held:
        assert ledger.reserve(SCOPE, "tokens", held, limit=10_000, at=AT) is not None
    assert (ledger.reserve(SCOPE, "tokens", estimate, limit=10_000, at=AT) is not None) is admitted
    pool.close()


def test_settle_release_and_windows(postgres_url):
    pool = connect_pool(postgres_url, size=2)
    ledger = PostgresLedger(pool)
    a = ledger.reserve(SCOPE, "USD", 2.0, limit=5.0, window="day", at=AT)
    b = ledger.reserve(SCOPE, "USD", 2.0, limit=5.0, window="day", at=AT)
    assert ledger.reserve(SCOPE, "USD", 2.0, limit=5.0, window="day", at=AT) is None
    ledger.settle(a, 1.25)
    ledger.release(b)
    assert ledger.reserved(SCOPE, "USD") == 0
    for window in ("hour", "day", "month"):
        assert ledger.usage(SCOPE, "USD", *window_bounds(window, AT)) == 1.25
    assert ledger.usage(SCOPE, "USD", AT - timedelta(days=2), AT + timedelta(hours=1)) == 1.25
    assert ledger.usage(SCOPE, "USD", AT + timedelta(hours=1)) == 0
    pool.close()


def test_a_decision_sees_a_charge_made_through_another_connection_pool(postgres_url, tmp_path):
    """PostgreSQL totals are shared by every worker: the engine reads them per decision, never from a cache."""
    from policyengine import load_policy
    from policyengine.budgets import live_reader

    (tmp_path / "shop.policy").write_text(
        'package shop\nrole clerk\nmodel small\n    region "eu-west-1" hosting internal\n'
        'rule clerks_invoke\n    allow role clerk to invoke model "*"\n'
        "budget capped\n    for model small\n    limit 1000 tokens per day\n    on exceed deny\n")
    mine, theirs = connect_pool(postgres_url, size=1), connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(mine)
    assert live_reader(ledger) is None
    policy = load_policy(tmp_path, ledger=ledger)
    request = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": "invoke",
               "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 400}}
    assert policy.evaluate(request, now=AT).effect == "allow"
    PostgresLedger(theirs).charge("model:small", "tokens", 700, AT)  # another worker's charge
    assert policy.evaluate(request, now=AT).effect == "deny"
    mine.close()
    theirs.close()


def _terminate_others(url: str) -> int:
    """End every other session on the test's database server-side, as a restart does; how many."""
    import psycopg

    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


def test_a_pooled_connection_the_server_ended_is_not_handed_out(postgres_url):
    """After a restart the pool's idle connections are dead: the next settle gets a fresh one and charges."""
    pool = connect_pool(postgres_url, size=2)
    ledger = PostgresLedger(pool)
    held = ledger.reserve(SCOPE, "tokens", 500, limit=1_000, at=AT)
    assert _terminate_others(postgres_url) >= 1
    ledger.settle(held, 120)
    assert ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.usage(SCOPE, "tokens", *window_bounds("month", AT)) == 120
    pool.close()


def test_a_settle_repeated_or_after_expiry_charges_once(postgres_url):
    """A settle charges only the hold it drops, so retrying one whose commit was not acknowledged is safe."""
    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    month = window_bounds("month", AT)
    a = ledger.reserve(SCOPE, "tokens", 500, limit=1_000, at=AT)
    ledger.settle(a, 120)
    ledger.settle(a, 120)
    assert ledger.usage(SCOPE, "tokens", *month) == 120
    b = ledger.reserve(SCOPE, "tokens", 300, limit=1_000, at=AT)
    assert ledger.expire(b.expires_at) == 1  # not settled in time: charged at its estimate
    assert ledger.usage(SCOPE, "tokens", *month) == 420
    ledger.settle(b, 90)
    assert ledger.usage(SCOPE, "tokens", *month) == 420
    pool.close()


def test_a_reservation_that_waits_on_a_stuck_scope_fails_instead_of_waiting_for_ever(postgres_url):
    """A scope another session holds (a stuck worker, a long transaction) makes a reservation fail after the
    pool's lock timeout: the caller denies, where it would otherwise hold its worker for as long as the lock."""
    import psycopg

    from policyengine.store.postgres import _sql

    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    outcome: list[BaseException | object] = []

    def reserve() -> None:
        try:
            outcome.append(ledger.reserve(SCOPE, "tokens", 100, limit=1_000, at=AT))
        except BaseException as error:  # noqa: BLE001 - the outcome is what the test reads
            outcome.append(error)

    with psycopg.connect(postgres_url) as holder, holder.transaction():
        holder.execute(_sql("budget_lock"), {"scope_key": SCOPE, "unit": "tokens"})
        waiting = threading.Thread(target=reserve, daemon=True)
        waiting.start()
        waiting.join(60)  # a liveness bound (the lock timeout is 5 s), not a speed target
        assert not waiting.is_alive(), "the reservation still waits on the held scope"
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.errors.LockNotAvailable), outcome
    assert ledger.reserve(SCOPE, "tokens", 100, limit=1_000, at=AT) is not None  # free again: admitted
    pool.close()


def test_a_call_whose_second_hold_fails_gives_the_first_back(postgres_url):
    """``holds.reserve`` over two budgets, the second scope stuck: the reservation fails, and the first budget's
    hold is released, not left to expire and be charged for a call that never happened."""
    import psycopg

    from policyengine.store import holds
    from policyengine.store.postgres import _sql

    def budget(scope: str) -> Any:
        limit = SimpleNamespace(unit="tokens", amount=1_000, window="month")
        return SimpleNamespace(id=scope, scope_key=scope, limits=(limit,))

    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    with psycopg.connect(postgres_url) as holder, holder.transaction():
        holder.execute(_sql("budget_lock"), {"scope_key": "model:stuck", "unit": "tokens"})
        with pytest.raises(psycopg.errors.LockNotAvailable):
            holds.reserve(ledger, [budget(SCOPE), budget("model:stuck")], 100, 0.0, None, at=AT)
    assert ledger.reserved(SCOPE, "tokens") == 0
    assert ledger.expire(AT + timedelta(days=1)) == 0  # nothing left to charge at its estimate
    assert ledger.usage(SCOPE, "tokens", *window_bounds("month", AT)) == 0
    pool.close()


@pytest.mark.parametrize("fate", ["released", "expired"])
def test_a_settle_after_the_hold_is_forgotten_still_records_the_usage(postgres_url, fate):
    """A hold's fate is kept a day past its deadline; a settle arriving later (a client retrying a day on)
    finds nothing, and is charged as an unknown hold is in every other ledger: its whole usage."""
    pool = connect_pool(postgres_url, size=1)
    ledger = PostgresLedger(pool)
    month = window_bounds("month", AT)
    r = ledger.reserve(SCOPE, "tokens", 100, limit=1_000, at=AT)
    if fate == "released":
        ledger.release(r)
    assert ledger.expire(r.expires_at + timedelta(days=1, seconds=1)) == (1 if fate == "expired" else 0)
    ledger.expire(r.expires_at + timedelta(days=2, seconds=2))  # the fate is forgotten now
    charged = ledger.usage(SCOPE, "tokens", *month)
    ledger.settle(r, 80)
    assert ledger.usage(SCOPE, "tokens", *month) == charged + 80
    ledger.settle(r, 80)  # the settle is retried: nothing says it was settled, so it is charged again
    assert ledger.usage(SCOPE, "tokens", *month) == charged + 160
    pool.close()
