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

from ..budgets import BudgetLedger, utc, window_start


class BufferedLedger:
    """Implements ``BudgetLedger`` over another ledger; call ``flush`` at checkpoints."""

    def __init__(self, durable: BudgetLedger) -> None:
        self.durable = durable
        self._base: dict[tuple[str, str, datetime], float] = {}
        self._pending: dict[tuple[str, str, datetime], float] = {}
        self._lock = threading.Lock()

    def usage(self, scope_key: str, unit: str, window_start: datetime) -> float:
        start = utc(window_start)
        key = (scope_key, unit, start)
        with self._lock:
            base = self._base.get(key)
            if base is None:
                base = self._base[key] = float(self.durable.usage(scope_key, unit, start))
            extra = sum(v for (k, u, h), v in self._pending.items() if k == scope_key and u == unit and h >= start)
        return base + extra

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = window_start("hour", at)
        with self._lock:
            self._pending[(scope_key, unit, hour)] = self._pending.get((scope_key, unit, hour), 0.0) + float(amount)

    def flush(self) -> None:
        """Write pending charges to the durable ledger and fold them into the cached bases.

        If a write fails, the charges not yet written stay pending (the ones
        written are folded in) and the error propagates: a later flush writes
        the rest, so nothing is lost or charged twice.
        """
        with self._lock:
            if not self._pending:
                return
            starts: dict[tuple[str, str], list[datetime]] = {}
            for (bk, bu, bstart) in self._base:
                starts.setdefault((bk, bu), []).append(bstart)
            pending = list(self._pending.items())
            self._pending = {}
            done = 0
            try:
                for (key, unit, hour), amount in pending:
                    self.durable.charge(key, unit, amount, hour)
                    done += 1
                    for bstart in starts.get((key, unit), ()):
                        if hour >= bstart:
                            self._base[(key, unit, bstart)] += amount
            finally:
                for k, amount in pending[done:]:
                    self._pending[k] = self._pending.get(k, 0.0) + amount
