"""The embedded budget ledger: running totals in a DuckDB file, reservations in memory, one process.

A DuckDB file has one writing process at a time, so this ledger serves every
thread of that process from memory (running totals per calendar window,
written through to the file) and serialises reserve/settle/release with one
lock: an admitted estimate is checked and held in one step. Holds live only in
memory: they belong to calls in flight in this process, so when the process
ends they end with it (nothing to expire on the next open), and a reservation
costs no disk write (a DuckDB commit is milliseconds; settling pays one).
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from ..budgets import Window, calendar_window, utc, window_bounds, window_start
from .files import open_duckdb, packaged_sql
from .protocols import DEFAULT_RESERVATION_TTL, Reservation

_PKG = "policyengine.store"


def _sql(name: str) -> str:
    return packaged_sql(_PKG, f"embedded/{name}")


def _naive(t: datetime) -> datetime:
    return utc(t).replace(tzinfo=None)


class EmbeddedLedger:
    """``BudgetLedger`` over the ``budget_*`` tables of a DuckDB database.

    Pass a path (created if needed) or an open connection that the orchestrator
    or audit log already use: the ledger then works on its own cursor of it.
    Holds not settled or released are released by ``expire`` once their
    deadline passes (or when the process ends).
    """

    def __init__(self, path_or_connection: str | Path | duckdb.DuckDBPyConnection) -> None:
        if isinstance(path_or_connection, duckdb.DuckDBPyConnection):
            self._conn = path_or_connection.cursor()
        else:
            self._conn = open_duckdb(path_or_connection, utc=False)
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str, datetime], float] = {}
        self._holds: dict[str, Reservation] = {}
        self._held: dict[tuple[str, str], float] = {}
        self._total_sql = _sql("budget_total")
        with self._lock:
            self._conn.execute(_sql("budget_create"))

    # -- reads ---------------------------------------------------------------------------------

    def _total(self, scope_key: str, unit: str, period: str, start: datetime) -> float:
        """Running total of one calendar window (naive UTC start); call with the lock held."""
        key = (scope_key, unit, period, start)
        amount = self._totals.get(key)
        if amount is None:
            row = self._conn.execute(self._total_sql, [scope_key, unit, period, start]).fetchone()
            amount = self._totals[key] = float(row[0]) if row else 0.0
        return amount

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = _naive(window_start)
        end = _naive(window_end) if window_end is not None else None
        period = calendar_window(start, end)
        with self._lock:
            if period is not None:
                return self._total(scope_key, unit, period, start)
            row = self._conn.execute(_sql("budget_between"), [scope_key, unit, start, end, end]).fetchone()
            return float(row[0]) if row else 0.0

    def window_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> float:
        """The running total of the calendar ``window`` starting at ``start``: one lookup once cached."""
        with self._lock:
            return self._total(scope_key, unit, window, _naive(start))

    def reserved(self, scope_key: str, unit: str) -> float:
        with self._lock:
            return self._held.get((scope_key, unit), 0.0)

    # -- writes --------------------------------------------------------------------------------

    def _charge_locked(self, scope_key: str, unit: str, amount: float, at: datetime | None) -> None:
        hour = _naive(window_start("hour", at))
        day = hour.replace(hour=0)
        month = day.replace(day=1)
        self._conn.execute(_sql("budget_charge_hour"), [scope_key, unit, hour, amount])
        self._conn.execute(_sql("budget_charge_totals"), [scope_key, unit, hour, amount, scope_key, unit, day, amount,
                                                          scope_key, unit, month, amount])
        for period, start in (("hour", hour), ("day", day), ("month", month)):
            key = (scope_key, unit, period, start)
            if key in self._totals:
                self._totals[key] += amount

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._charge_locked(scope_key, unit, float(amount), at)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._totals.clear()
                raise

    def _hold(self, r: Reservation) -> None:
        self._holds[r.id] = r
        self._held[(r.scope_key, r.unit)] = self._held.get((r.scope_key, r.unit), 0.0) + r.amount

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
        due = [r.id for r in self._holds.values() if r.expires_at <= now]
        for rid in due:
            self._unhold(rid)
        return len(due)

    def reserve(self, scope_key: str, unit: str, estimate: float, *, limit: float, window: Window = "month",
                at: datetime | None = None, ttl: timedelta = DEFAULT_RESERVATION_TTL) -> Reservation | None:
        t = utc(at)
        start, _ = window_bounds(window, t)
        estimate = float(estimate)
        with self._lock:
            self._expire_locked(t)
            spent = self._total(scope_key, unit, window, start.replace(tzinfo=None))
            if spent + self._held.get((scope_key, unit), 0.0) + estimate > float(limit):
                return None
            r = Reservation(uuid.uuid4().hex, scope_key, unit, estimate, t, t + ttl)
            self._hold(r)
            return r

    def settle(self, reservation: Reservation, actual: float) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._charge_locked(reservation.scope_key, reservation.unit, float(actual), reservation.at)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._totals.clear()
                raise  # the hold stays until released or expired
            self._unhold(reservation.id)

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._unhold(reservation.id)

    def expire(self, now: datetime | None = None) -> int:
        with self._lock:
            return self._expire_locked(utc(now))

    # -- lifetime ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forget cached totals; the next reads query the tables again."""
        with self._lock:
            self._totals.clear()

    def close(self) -> None:
        """Close the ledger's cursor (and the database, when the ledger opened it)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
