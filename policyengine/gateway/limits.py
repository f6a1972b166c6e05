"""Admission before an upstream call: budget reservations (rate limits: ``policyengine.store.ratelimit``).

Budgets cannot be overspent because every call *reserves* its estimate in the
ledger before it goes upstream (``BudgetLedger.reserve`` admits it only if spent
plus live holds plus the estimate stays within the limit, atomically), then
settles the real usage or releases the hold when the call fails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..budgets import InMemoryLedger, Window, utc, window_bounds
from ..store.protocols import DEFAULT_RESERVATION_TTL, BudgetLedger, Reservation


class MemoryReservingLedger(InMemoryLedger):
    """The store's ``BudgetLedger`` protocol in this process's memory (the gateway's default, without ``ledger:``).

    Microseconds per call, where the DuckDB ledger's durable holds cost
    milliseconds; budgets start from zero when the process restarts. Give the
    gateway a ledger file (``policyengine.store``'s ``EmbeddedLedger``) to keep them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._holds: dict[str, Reservation] = {}
        self._held: dict[tuple[str, str], float] = {}
        self._reserve_lock = threading.Lock()

    def _unhold(self, rid: str) -> None:
        r = self._holds.pop(rid, None)
        if r is not None:
            left = self._held[(r.scope_key, r.unit)] - r.amount
            self._held[(r.scope_key, r.unit)] = max(0.0, left)

    def reserve(self, scope_key: str, unit: str, estimate: float, *, limit: float, window: Window = "month",
                at: datetime | None = None, ttl: timedelta = DEFAULT_RESERVATION_TTL) -> Reservation | None:
        t = utc(at)
        start, end = window_bounds(window, t)
        with self._reserve_lock:
            self._expire_locked(t)
            spent = self.usage(scope_key, unit, start, end)
            if spent + self._held.get((scope_key, unit), 0.0) + float(estimate) > float(limit):
                return None
            r = Reservation(uuid.uuid4().hex, scope_key, unit, float(estimate), t, t + ttl)
            self._holds[r.id] = r
            self._held[(scope_key, unit)] = self._held.get((scope_key, unit), 0.0) + r.amount
            return r

    def settle(self, reservation: Reservation, actual: float) -> None:
        with self._reserve_lock:  # charge and drop the hold in one step: no reader sees neither
            self.charge(reservation.scope_key, reservation.unit, float(actual), reservation.at)
            self._unhold(reservation.id)

    def release(self, reservation: Reservation) -> None:
        with self._reserve_lock:
            self._unhold(reservation.id)

    def _expire_locked(self, now: datetime) -> int:
        due = [r.id for r in self._holds.values() if r.expires_at <= now]
        for rid in due:
            self._unhold(rid)
        return len(due)

    def expire(self, now: datetime | None = None) -> int:
        with self._reserve_lock:
            return self._expire_locked(utc(now))

    def reserved(self, scope_key: str, unit: str) -> float:
        with self._reserve_lock:
            return self._held.get((scope_key, unit), 0.0)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Hold:
    """The reservations one call holds, and what refused it if it was refused."""

    reservations: tuple[tuple[Reservation, str], ...]  # (reservation, "tokens" | currency)
    refused_by: str | None = None  # budget id
    refused_unit: str | None = None


def reserve(ledger: BudgetLedger, budgets: Sequence[Any], tokens: float, cost: float, currency: str | None) -> Hold:
    """Hold ``tokens`` (and ``cost`` in ``currency``) in every budget limit; all or nothing."""
    taken: list[tuple[Reservation, str]] = []
    for budget in budgets:
        for limit in budget.limits:
            if limit.unit == "tokens":
                amount = tokens
            elif currency is not None and limit.unit == currency:
                amount = cost
            else:
                continue
            held = ledger.reserve(budget.scope_key, limit.unit, amount, limit=limit.amount, window=limit.window)
            if held is None:
                for reservation, _ in taken:
                    ledger.release(reservation)
                return Hold((), budget.id, limit.unit)
            taken.append((held, limit.unit))
    return Hold(tuple(taken))


def settle(ledger: BudgetLedger, hold: Hold, tokens: float, cost: float) -> None:
    for reservation, unit in hold.reservations:
        ledger.settle(reservation, tokens if unit == "tokens" else cost)


def release(ledger: BudgetLedger, hold: Hold) -> None:
    for reservation, _ in hold.reservations:
        ledger.release(reservation)
