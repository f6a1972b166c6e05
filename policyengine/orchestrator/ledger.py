"""A write-behind cache in front of a durable budget ledger.

A DuckDB commit per model call (~1-2 ms here) would dwarf the rest of a step,
so the orchestrator charges usage into memory and writes it to the durable
ledger at its checkpoints, when it also flushes run state and the audit log.
Only one process owns a database file at a time, so the cache cannot go stale:
durable usage is read once per (scope, unit, window) and pending charges are
added on top. A crash loses at most the charges since the last checkpoint, and
those belong to runs whose state was not flushed either (they re-run).
"""

from __future__ import annotations

import threading
from datetime import datetime

from ..budgets import BudgetLedger, calendar_window, checked_amount, utc, window_start, windowed_usage
from ..store.holds import LocalHolds


class BufferedLedger(LocalHolds):
    """Implements the store's ``BudgetLedger`` (reservations in memory) over another ledger; ``flush`` at checkpoints.

    Its holds are this process's model calls in flight: ``reserve`` counts the
    durable usage, the pending charges and every live hold, under one lock.
    """

    def __init__(self, durable: BudgetLedger) -> None:
        self._init_holds()
        self.durable = durable
        self._durable_usage = windowed_usage(durable)
        self._base: dict[tuple[str, str, datetime, datetime | None], float] = {}
        self._pending: dict[tuple[str, str, datetime], float] = {}
        # the pending charges' running totals per calendar window: a calendar-window read is one lookup
        self._pending_totals: dict[tuple[str, str, str, datetime], float] = {}
        self._lock = threading.Lock()

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = utc(window_start)
        end = utc(window_end) if window_end is not None else None
        key = (scope_key, unit, start, end)
        with self._lock:
            base = self._base.get(key)
            if base is None:
                base = self._base[key] = float(self._durable_usage(scope_key, unit, start, end))
            period = calendar_window(start, end)
            if period is not None:
                extra = self._pending_totals.get((scope_key, unit, period, start), 0.0)
            else:
                extra = sum(v for (k, u, h), v in self._pending.items()
                            if k == scope_key and u == unit and h >= start and (end is None or h < end))
        return base + extra

    def _add_pending(self, scope_key: str, unit: str, hour: datetime, amount: float) -> None:
        self._pending[(scope_key, unit, hour)] = self._pending.get((scope_key, unit, hour), 0.0) + amount
        day = hour.replace(hour=0)
        for key in ((scope_key, unit, "hour", hour), (scope_key, unit, "day", day),
                    (scope_key, unit, "month", day.replace(day=1))):
            self._pending_totals[key] = self._pending_totals.get(key, 0.0) + amount

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = window_start("hour", at)
        amount = checked_amount(amount)
        with self._lock:
            self._add_pending(scope_key, unit, hour, amount)

    def flush(self) -> None:
        """Write pending charges to the durable ledger and fold them into the cached bases.

        If a write fails, the charges not yet written stay pending (the ones
        written are folded in) and the error propagates: a later flush writes
        the rest, so nothing is lost or charged twice.
        """
        with self._lock:
            if not self._pending:
                return
            starts: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = {}
            for (bk, bu, bstart, bend) in self._base:
                starts.setdefault((bk, bu), []).append((bstart, bend))
            pending = list(self._pending.items())
            self._pending = {}
            self._pending_totals = {}
            done = 0
            try:
                for (key, unit, hour), amount in pending:
                    self.durable.charge(key, unit, amount, hour)
                    done += 1
                    for bstart, bend in starts.get((key, unit), ()):
                        if hour >= bstart and (bend is None or hour < bend):
                            self._base[(key, unit, bstart, bend)] += amount
            finally:
                for (key, unit, hour), amount in pending[done:]:
                    self._add_pending(key, unit, hour, amount)
