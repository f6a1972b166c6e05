"""The embedded budget ledger: running totals in a DuckDB file, reservations in memory, one process.

A DuckDB file has one writing process at a time, so this ledger serves every
thread of that process from memory (running totals per calendar window,
written through to the file); reservations are ``store.holds.LocalHolds``: an
admitted estimate is checked and held in one step under one lock. Holds live only in
memory: they belong to calls in flight in this process, so when the process
ends they end with it (nothing to expire on the next open), and a reservation
costs no disk write. Charges are group-committed: a DuckDB commit costs
milliseconds, so concurrent settles share one transaction, and each returns
only once its charge is durable.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import duckdb

from ..budgets import Total, calendar_window, checked_amount, utc, window_start
from .files import StoreError, open_duckdb, packaged_sql
from .holds import LocalHolds, over_estimate, settle_amount
from .protocols import Reservation, Window

_PKG = "policyengine.store"


def _sql(name: str) -> str:
    return packaged_sql(_PKG, f"embedded/{name}")


def _naive(t: datetime) -> datetime:
    return utc(t).replace(tzinfo=None)


class EmbeddedLedger(LocalHolds):
    """``BudgetLedger`` over the ``budget_*`` tables of a DuckDB database.

    Pass a path (created if needed) or an open connection that the orchestrator
    or audit log already use: the ledger then works on its own cursor of it.
    Holds not settled or released are charged at their estimate by ``expire``
    once their deadline passes (they end with the process).
    """

    def __init__(self, path_or_connection: str | Path | duckdb.DuckDBPyConnection) -> None:
        if isinstance(path_or_connection, duckdb.DuckDBPyConnection):
            self._conn = path_or_connection.cursor()
        else:
            self._conn = open_duckdb(path_or_connection, utc=False)
        self._writer = self._conn.cursor()  # commits run on their own cursor while readers use ``_conn``
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._totals: dict[tuple[str, str, str, datetime], Total] = {}
        self.epoch = 0  # bumped when ``refresh`` drops the cached totals (``Total`` readers then ask again)
        self._queue: list[tuple[str, str, float, datetime]] = []
        self._queued = 0  # tickets handed out
        self._durable = 0  # tickets whose batch has been written (or has failed)
        self._writing = False
        self._failed: list[tuple[int, int, BaseException]] = []
        self._init_holds()
        self._total_sql = _sql("budget_total")
        self._hour_sql = _sql("budget_charge_hour")
        self._totals_sql = _sql("budget_charge_totals")
        with self._lock:
            self._conn.execute(_sql("budget_create"))

    # -- reads ---------------------------------------------------------------------------------

    def _cell(self, scope_key: str, unit: str, period: str, start: datetime) -> Total:
        """Running total of one calendar window (naive UTC start), loaded once; call with the lock held."""
        key = (scope_key, unit, period, start)
        total = self._totals.get(key)
        if total is None:
            row = self._conn.execute(self._total_sql, [scope_key, unit, period, start]).fetchone()
            total = self._totals[key] = Total(float(row[0]) if row else 0.0)
        return total

    def _total(self, scope_key: str, unit: str, period: str, start: datetime) -> float:
        return self._cell(scope_key, unit, period, start).value

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = _naive(window_start)
        end = _naive(window_end) if window_end is not None else None
        period = calendar_window(start, end)
        if period is None:
            self.flush()  # hour buckets in the file: everything queued must be there first
        with self._lock:
            if period is not None:
                return self._total(scope_key, unit, period, start)
            row = self._conn.execute(_sql("budget_between"), [scope_key, unit, start, end, end]).fetchone()
            return float(row[0]) if row else 0.0

    def window_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> float:
        """The running total of the calendar ``window`` starting at ``start``: one lookup once cached."""
        with self._lock:
            return self._total(scope_key, unit, window, _naive(start))

    def live_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> Total:
        """The cached ``Total`` of the calendar ``window`` starting at ``start``, updated in place by every charge
        of this ledger until ``refresh`` (which bumps ``epoch``). One process owns the file, so nobody else adds."""
        with self._lock:
            return self._cell(scope_key, unit, window, _naive(start))

    # -- writes: group commit ------------------------------------------------------------------
    #
    # A charge is applied to the cached running totals at once (so every reservation after it
    # counts it) and queued; the caller then waits until it is durable. The first waiter writes
    # every queued charge in one transaction while the others wait for it: many callers, one
    # commit, none told "done" before it.

    def _cached(self, scope_key: str, unit: str, hour: datetime) -> None:
        """Load the three windows of ``hour`` into the cache, then add; call with the lock held."""
        day = hour.replace(hour=0)
        for period, start in (("hour", hour), ("day", day), ("month", day.replace(day=1))):
            self._total(scope_key, unit, period, start)

    def _apply(self, scope_key: str, unit: str, amount: float, hour: datetime) -> None:
        day = hour.replace(hour=0)
        for period, start in (("hour", hour), ("day", day), ("month", day.replace(day=1))):
            self._totals[(scope_key, unit, period, start)].value += amount

    def _enqueue(self, scope_key: str, unit: str, amount: float, at: datetime | None) -> int:
        """Count a charge in the cached totals and queue it for the next commit; its ticket."""
        hour = _naive(window_start("hour", at))
        with self._lock:
            self._cached(scope_key, unit, hour)
            self._apply(scope_key, unit, amount, hour)
            self._queue.append((scope_key, unit, amount, hour))
            self._queued += 1
            return self._queued

    def _write(self, batch: list[tuple[str, str, float, datetime]]) -> None:
        """Write ``batch`` in one transaction (amounts summed per bucket first)."""
        buckets: dict[tuple[str, str, datetime], float] = {}
        for scope_key, unit, amount, hour in batch:
            buckets[(scope_key, unit, hour)] = buckets.get((scope_key, unit, hour), 0.0) + amount
        w = self._writer
        w.execute("BEGIN")
        try:
            for (scope_key, unit, hour), amount in buckets.items():
                day = hour.replace(hour=0)
                w.execute(self._hour_sql, [scope_key, unit, hour, amount])
                w.execute(self._totals_sql, [scope_key, unit, hour, amount, scope_key, unit, day, amount,
                                             scope_key, unit, day.replace(day=1), amount])
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    def _wait(self, ticket: int) -> None:
        """Return once charge ``ticket`` is committed (writing the queue if nobody is); raise if its batch failed."""
        with self._lock:
            while self._durable < ticket:
                if self._writing:
                    self._done.wait()
                    continue
                batch, upto, self._queue = self._queue, self._queued, []
                self._writing = True
                self._lock.release()
                error: BaseException | None = None
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                    error = exc
                finally:
                    self._lock.acquire()
                    self._writing = False
                if error is not None:
                    for scope_key, unit, amount, hour in batch:  # the cache forgets what was not written
                        self._apply(scope_key, unit, -amount, hour)
                    self._failed.append((self._durable + 1, upto, error))
                self._durable = upto
                self._done.notify_all()
            for low, high, error in self._failed:
                if low <= ticket <= high:
                    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    raise StoreError(f"budget ledger: could not record usage: {first}") from error

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        self._wait(self._enqueue(scope_key, unit, checked_amount(amount), at))

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Charge and drop the hold together, then wait for the commit outside the hold lock (so settles group)."""
        r = reservation
        actual, unusable = settle_amount(r, actual)
        with self._hold_lock:
            actual = over_estimate(self._expired, r, actual)
            if not actual and r.id not in self._holds:  # expired at an estimate the usage did not pass
                if unusable is not None:
                    raise unusable
                return
            ticket = self._enqueue(r.scope_key, r.unit, actual, r.at)
            held = self._unhold(r.id)
        try:
            self._wait(ticket)
        except StoreError:
            if held:  # not recorded: hold the budget again until released or expired (fail closed)
                with self._hold_lock:
                    self._holds[r.id] = r
                    self._held[(r.scope_key, r.unit)] = self._held.get((r.scope_key, r.unit), 0.0) + r.amount
            raise
        if unusable is not None:
            raise unusable

    def flush(self) -> None:
        """Wait until every charge queued so far is committed."""
        with self._lock:
            ticket = self._queued
        self._wait(ticket)

    # -- lifetime ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forget cached totals (after every queued charge is written); the next reads query the tables again."""
        while True:
            self.flush()
            with self._lock:
                if not self._queue and not self._writing:  # a charge queued meanwhile must stay counted
                    self._totals.clear()
                    self.epoch += 1
                    return

    def close(self) -> None:
        """Write what is queued, close the ledger's cursors (and the database, when the ledger opened it)."""
        try:
            self.flush()
        except StoreError:
            pass  # a batch that failed was reported to each of its callers; closing still closes
        finally:
            with self._lock:
                self._writer.close()
                self._conn.close()

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
