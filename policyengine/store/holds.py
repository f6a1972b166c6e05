"""Holding budget around a model call: reserve an estimate first, settle the real usage or release after.

Owned here, used by every caller that spends budget (the gateway, the
orchestrator): a call's estimate is held in every limit of every budget that
covers it (``reserve``: all or nothing), then ``settle`` charges the real usage
or ``release`` drops the holds when the call did not happen. Because the hold is
taken before the call, concurrent callers (threads, processes, hosts sharing a
PostgreSQL ledger) cannot together spend more than a limit, provided the real
usage of a call does not exceed its estimate.

``LocalHolds`` is the in-process hold table for ledgers that one process owns
(the embedded DuckDB ledger, the orchestrator's write-behind ledger, the
gateway's in-memory ledger): holds live in memory, beside the calls in flight,
and end with the process.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..budgets import InMemoryLedger, Window, checked_amount, utc, window_bounds
from .protocols import DEFAULT_RESERVATION_TTL, BudgetLedger, Reservation


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning token estimate (about 4 characters a token) of a prompt, for reservations."""
    return len(text) // 4 + 1


def settle_amount(reservation: Reservation, actual: object) -> tuple[float, ValueError | None]:
    """The usage a settle of ``reservation`` charges, and the error to raise once it is charged: ``actual``, or
    the hold's estimate when ``actual`` is not a usage amount (a negative one would give budget back, NaN
    passes every check after it; the call happened, so its estimate is charged: when in doubt, charge)."""
    try:
        return checked_amount(actual, "usage"), None
    except ValueError as error:
        return reservation.amount, ValueError(f"{error}; the hold's estimate of {reservation.amount:g} "
                                              f"{reservation.unit} was charged instead")


def over_estimate(expired: dict[str, float], reservation: Reservation, actual: float) -> float:
    """What a settle of ``reservation`` still charges: ``actual``, or, for a hold charged at its estimate when
    it expired (``expired``: id -> estimate, from which it is taken), what ``actual`` passes that estimate by.
    A hold released, or settled before, is charged ``actual`` (the call happened: when in doubt, charge)."""
    estimate = expired.pop(reservation.id, None)
    return float(actual) if estimate is None else max(0.0, float(actual) - estimate)


class LocalHolds:
    """Reservations kept in this process's memory over a ledger's own ``usage`` and ``charge``.

    Mix into a ledger class that has ``usage`` and ``charge`` (thread-safe) and
    call ``_init_holds`` from its ``__init__``.
    ``reserve`` reads the window's usage and holds the estimate under one lock,
    and ``settle`` charges and drops the hold under the same lock, so no reader
    of the holds sees a call counted twice or not at all. Atomic only within the
    process: use it for ledgers one process owns.
    """

    def _init_holds(self) -> None:
        self._holds: dict[str, Reservation] = {}
        self._held: dict[tuple[str, str], float] = {}
        self._hold_lock = threading.Lock()
        # holds charged at their estimate on expiry -> that estimate: a later settle charges only what its
        # real usage passes it by (the usage is recorded, the estimate not twice)
        self._expired: dict[str, float] = {}

    def _unhold(self, rid: str) -> bool:
        r = self._holds.pop(rid, None)
        if r is None:
            return False
        left = self._held[(r.scope_key, r.unit)] - r.amount
        if left <= 1e-9:
            del self._held[(r.scope_key, r.unit)]
        else:
            self._held[(r.scope_key, r.unit)] = left
        return True

    def _expire_locked(self, now: datetime) -> int:
        """Drop the holds past their deadline, charging each at its estimate: nobody settled or released it,
        so its call may have happened (when in doubt, charge). A hold whose charge fails stays held."""
        due = [r for r in self._holds.values() if r.expires_at <= now]
        dropped = 0
        for r in due:
            try:
                self.charge(r.scope_key, r.unit, r.amount, r.at)
            except Exception:  # noqa: BLE001 - not charged: keep holding it (fail closed), try at the next expiry
                continue
            self._unhold(r.id)
            self._expired[r.id] = r.amount
            dropped += 1
        return dropped

    def reserve(self, scope_key: str, unit: str, estimate: float, *, limit: float, window: Window = "month",
                at: datetime | None = None, ttl: timedelta = DEFAULT_RESERVATION_TTL) -> Reservation | None:
        t = utc(at)
        start, end = window_bounds(window, t)
        estimate, limit = checked_amount(estimate, "estimate"), checked_amount(limit, "limit")
        with self._hold_lock:
            self._expire_locked(t)
            spent = self.usage(scope_key, unit, start, end)
            if spent + self._held.get((scope_key, unit), 0.0) + estimate > limit:
                return None
            r = Reservation(uuid.uuid4().hex, scope_key, unit, estimate, t, t + ttl)
            self._holds[r.id] = r
            self._held[(scope_key, unit)] = self._held.get((scope_key, unit), 0.0) + estimate
            return r

    def settle(self, reservation: Reservation, actual: float) -> None:
        actual, unusable = settle_amount(reservation, actual)
        with self._hold_lock:  # charge and drop the hold in one step: a failed charge keeps the hold
            actual = over_estimate(self._expired, reservation, actual)
            if actual:
                self.charge(reservation.scope_key, reservation.unit, actual, reservation.at)
            self._unhold(reservation.id)
        if unusable is not None:
            raise unusable

    def release(self, reservation: Reservation) -> None:
        with self._hold_lock:
            self._unhold(reservation.id)

    def expire(self, now: datetime | None = None) -> int:
        with self._hold_lock:
            return self._expire_locked(utc(now))

    def reserved(self, scope_key: str, unit: str) -> float:
        with self._hold_lock:
            return self._held.get((scope_key, unit), 0.0)


class MemoryReservingLedger(LocalHolds, InMemoryLedger):
    """The ``BudgetLedger`` protocol in this process's memory (the gateway's default, without ``ledger:``).

    Microseconds per call; budgets start from zero when the process restarts.
    Give the gateway a ledger file or ``postgresql://...`` to keep them.
    """

    def __init__(self) -> None:
        InMemoryLedger.__init__(self)
        self._init_holds()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Hold:
    """The reservations one call holds, and what refused it if it was refused.

    ``unheld`` are the (scope, unit) pairs the call's budgets cover without a
    limit in that unit: nothing to hold, but ``settle`` charges them too, so
    usage is recorded in every unit of every scope that covers the call.
    """

    reservations: tuple[tuple[Reservation, str], ...]  # (reservation, "tokens" | currency)
    refused_by: str | None = None  # budget id
    refused_unit: str | None = None
    unheld: tuple[tuple[str, str], ...] = ()
    at: datetime | None = None


NO_HOLD = Hold(())


def hold_token(hold: Hold) -> str:
    """``hold`` as an opaque string a client keeps between a decision and its usage (``policyengine serve``).

    It names the reservations, not the budget left: settling or releasing it
    acts on the ledger, which any worker sharing that ledger can do.
    """
    doc = {"at": hold.at.isoformat() if hold.at else None,
           "r": [[r.id, r.scope_key, r.unit, r.amount, r.at.isoformat(), r.expires_at.isoformat(), unit]
                 for r, unit in hold.reservations],
           "u": [list(pair) for pair in hold.unheld]}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def hold_from_token(token: str) -> Hold:
    """The ``Hold`` a ``hold_token`` names; ``ValueError`` when ``token`` is not one."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        reservations = tuple((Reservation(str(i), str(scope), str(unit), float(amount), datetime.fromisoformat(at),
                                          datetime.fromisoformat(expires)), str(kind))
                             for i, scope, unit, amount, at, expires, kind in doc["r"])
        unheld = tuple((str(scope), str(unit)) for scope, unit in doc["u"])
        at = datetime.fromisoformat(doc["at"]) if doc["at"] else None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError("not a reservation token (as hold_token writes it)") from error
    return Hold(reservations, unheld=unheld, at=at)


def reserve(ledger: BudgetLedger, budgets: Sequence[Any], tokens: float, cost: float, currency: str | None,
            at: datetime | None = None) -> Hold:
    """Hold ``tokens`` (and ``cost`` in ``currency``) in every limit of ``budgets``; all or nothing.

    One reservation per (scope, unit), settled once. Further limits of the same
    scope and unit (another window, or another budget on the same scope) are
    checked by a zero reservation taken after it, which counts the first hold,
    and released at once: the estimate is charged once and checked everywhere.
    """
    taken: list[tuple[Reservation, str]] = []
    first: dict[tuple[str, str], Reservation] = {}
    try:
        for budget in budgets:
            for limit in budget.limits:
                if limit.unit == "tokens":
                    amount = tokens
                elif currency is not None and limit.unit == currency:
                    amount = cost
                else:
                    continue
                key = (budget.scope_key, limit.unit)
                check = key in first
                held = ledger.reserve(budget.scope_key, limit.unit, 0.0 if check else amount, limit=limit.amount,
                                      window=limit.window, at=at)
                if held is None:
                    release(ledger, Hold(tuple(taken)))
                    return Hold((), budget.id, limit.unit)
                if check:
                    ledger.release(held)
                else:
                    first[key] = held
                    taken.append((held, limit.unit))
    except BaseException:  # a ledger error part way (a stuck scope, a lost connection): the call will not happen,
        release(ledger, Hold(tuple(taken)))  # so the holds taken are given back, not left to expire as charges
        raise
    units = ("tokens",) if currency is None else ("tokens", currency)
    unheld = tuple(dict.fromkeys((b.scope_key, u) for b in budgets for u in units if (b.scope_key, u) not in first))
    return Hold(tuple(taken), unheld=unheld, at=at)


def settle(ledger: BudgetLedger, hold: Hold, tokens: float, cost: float) -> None:
    """Charge the real usage to every reservation of ``hold`` (and its unheld units) and drop the holds.

    A usage that is not a usage amount (negative, NaN, infinite) charges each hold its estimate, and unheld
    units nothing; then the first such ``ValueError`` is raised, once every hold is dealt with."""
    unusable: list[ValueError] = []
    for reservation, unit in hold.reservations:
        try:
            ledger.settle(reservation, tokens if unit == "tokens" else cost)
        except ValueError as error:
            unusable.append(error)
    for scope_key, unit in hold.unheld:
        amount = tokens if unit == "tokens" else cost
        if amount:
            try:
                ledger.charge(scope_key, unit, amount, hold.at)
            except ValueError as error:
                unusable.append(error)
    if unusable:
        raise unusable[0]


def release(ledger: BudgetLedger, hold: Hold) -> None:
    """Drop every reservation of ``hold`` without charging (the call did not happen)."""
    for reservation, _ in hold.reservations:
        ledger.release(reservation)


def can_reserve(ledger: Any) -> bool:
    """Whether ``ledger`` takes reservations (the store's ledgers do; a bare usage ledger does not)."""
    return all(callable(getattr(ledger, name, None)) for name in ("reserve", "settle", "release"))
