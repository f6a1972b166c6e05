"""Admission before an upstream call: per-minute rate limits and budget reservations.

Budgets cannot be overspent because every call *reserves* its estimate in the
ledger before it goes upstream (``BudgetLedger.reserve`` admits it only if spent
plus live holds plus the estimate stays within the limit, atomically), then
settles the real usage or releases the hold when the call fails.

``InProcessRateLimiter`` is the interim limiter of one gateway process (the
shared ``RateLimiter`` of ``policyengine.store`` is not there yet); it has the
same shape: ``hit`` admits or says how long to wait, ``adjust`` corrects the
token count once the real usage is known.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..store.protocols import BudgetLedger, Reservation


class RateLimiter(Protocol):
    def hit(self, key: str, amount: float, limit: float, period_s: float = 60.0) -> float | None:
        """Count ``amount`` against ``key`` if it fits in ``limit`` per ``period_s``; else seconds to wait (nothing counted)."""
        ...

    def adjust(self, key: str, delta: float, period_s: float = 60.0) -> None:
        """Add ``delta`` (may be negative) to the most recent window of ``key``."""
        ...


class InProcessRateLimiter:
    """Sliding-window counts per key, in this process."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._events: dict[str, deque[list[float]]] = {}
        self._lock = threading.Lock()

    def _trim(self, events: deque[list[float]], now: float, period_s: float) -> float:
        while events and events[0][0] <= now - period_s:
            events.popleft()
        return sum(e[1] for e in events)

    def hit(self, key: str, amount: float, limit: float, period_s: float = 60.0) -> float | None:
        with self._lock:
            now = self._clock()
            events = self._events.setdefault(key, deque())
            used = self._trim(events, now, period_s)
            if used + amount > limit:
                return max(0.001, events[0][0] + period_s - now) if events else period_s
            events.append([now, amount])
            return None

    def adjust(self, key: str, delta: float, period_s: float = 60.0) -> None:
        with self._lock:
            events = self._events.setdefault(key, deque())
            events.append([self._clock(), delta])


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
