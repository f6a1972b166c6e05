"""The engine's live running totals never go stale: every change to a ledger shows in the next decision.

A budgeted decision reads each limit's usage from a ``Total`` the ledger
updates in place, looked up once per hour (``budgets.LiveTotals``). These cases
are where that lookup could serve an old number: a charge made after the
decision cached its totals (on the ledger itself or through another policy
over it), a window that rolls over, a refresh of the embedded ledger after a
write behind its back, and a charge whose write failed and was taken back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policyengine import InMemoryLedger, load_policy
from policyengine.budgets import live_reader, window_end
from policyengine.store import StoreError
from policyengine.store.embedded_ledger import EmbeddedLedger

AT = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # hour, day and month all end at 2026-02-01 00:00
REQUEST = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": "invoke",
           "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 400}}


def policy_text(window: str) -> str:
    return f"""
package shop
role clerk
model small
    region "eu-west-1" hosting internal
rule clerks_invoke
    allow role clerk to invoke model "*"
budget capped
    for model small
    limit 1000 tokens per {window}
    on exceed deny
"""


def make_ledger(kind: str, tmp_path):
    return InMemoryLedger() if kind == "memory" else EmbeddedLedger(tmp_path / "l.duckdb")


def effect(policy, at: datetime | None) -> str:
    return policy.evaluate(REQUEST, now=at).effect


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
@pytest.mark.parametrize("window", ["hour", "day", "month"])
@pytest.mark.parametrize("via", ["ledger", "another policy"])
def test_a_charge_after_the_totals_were_cached_is_seen_and_the_window_rolls_over(tmp_path, kind, window, via):
    (tmp_path / "shop.policy").write_text(policy_text(window))
    ledger = make_ledger(kind, tmp_path)
    policy = load_policy(tmp_path, ledger=ledger)
    assert policy._evaluator._live is not None  # the path under test
    assert effect(policy, AT) == "allow"  # caches this hour's live totals
    if via == "ledger":
        ledger.charge("model:small", "tokens", 700, AT)
    else:
        other = load_policy(tmp_path, ledger=ledger)
        assert other.charge(REQUEST, tokens=700, at=AT) == ("model:small",)
    assert effect(policy, AT) == "deny"  # 700 + 400 > 1000
    end = window_end(window, AT)
    assert effect(policy, end - timedelta(microseconds=1)) == "deny"
    assert effect(policy, end) == "allow"  # a new window: nothing spent in it
    ledger.charge("model:small", "tokens", 601, end)
    assert effect(policy, end) == "deny"  # charged in the new window after it was cached
    assert effect(policy, AT) == "deny"  # back in the old window: its total is still there


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_decisions_on_the_clock_see_charges_at_the_clock(tmp_path, kind):
    (tmp_path / "shop.policy").write_text(policy_text("month"))
    ledger = make_ledger(kind, tmp_path)
    policy = load_policy(tmp_path, ledger=ledger)
    assert effect(policy, None) == "allow"
    ledger.charge("model:small", "tokens", 700, datetime.now(UTC))
    assert effect(policy, None) == "deny"


def test_a_refresh_after_a_write_behind_the_embedded_ledger_is_seen(tmp_path):
    (tmp_path / "shop.policy").write_text(policy_text("day"))
    ledger = EmbeddedLedger(tmp_path / "l.duckdb")
    policy = load_policy(tmp_path, ledger=ledger)
    ledger.charge("model:small", "tokens", 100, AT)
    assert effect(policy, AT) == "allow"
    ledger._conn.execute("UPDATE budget_totals SET amount = amount + 600 WHERE period = 'day'")
    ledger.refresh()  # drops the cached totals: the decision must read the tables again
    assert effect(policy, AT) == "deny"


def test_a_charge_whose_write_failed_is_taken_back_from_the_live_totals(tmp_path, monkeypatch):
    (tmp_path / "shop.policy").write_text(policy_text("hour"))
    ledger = EmbeddedLedger(tmp_path / "l.duckdb")
    policy = load_policy(tmp_path, ledger=ledger)
    assert effect(policy, AT) == "allow"

    def broken(batch):
        raise OSError("disk full")

    monkeypatch.setattr(ledger, "_write", broken)
    with pytest.raises(StoreError):
        ledger.charge("model:small", "tokens", 700, AT)
    assert effect(policy, AT) == "allow"  # not recorded, so not counted
    monkeypatch.undo()
    ledger.charge("model:small", "tokens", 700, AT)
    assert effect(policy, AT) == "deny"


class _Wrapper:
    def __init__(self) -> None:
        self.inner = InMemoryLedger()

    def usage(self, scope_key, unit, window_start, window_end=None):
        return self.inner.usage(scope_key, unit, window_start, window_end)


class _Doubled(InMemoryLedger):
    def usage(self, scope_key, unit, window_start, window_end=None):
        return 2 * super().usage(scope_key, unit, window_start, window_end)


class _NoEpoch(InMemoryLedger):
    epoch = None  # cannot say when its totals were dropped: not read live


@pytest.mark.parametrize(("ledger", "live"), [
    (InMemoryLedger(), True),
    (_Doubled(), False),  # reads usage its own way
    (_Wrapper(), False),  # only usage
    (_NoEpoch(), False),
])
def test_only_ledgers_that_keep_their_totals_in_place_are_read_live(ledger, live):
    assert (live_reader(ledger) is not None) is live
    from policyengine.store.postgres import PostgresLedger
    assert live_reader(object.__new__(PostgresLedger)) is None  # others write too: every read is a query
