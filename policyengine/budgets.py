"""Budget ledgers: how much each scope has used in the current calendar UTC window.

The engine only *reads* a ledger while deciding (``usage``); actual usage is
charged by the caller after a model call (``charge``), because only then is the
real token count and cost known. A scope is a string such as
``workflow:invoice-exceptions``, ``model:frontier_llm``, ``agent:invoice_classifier``
or ``role:analyst`` (see ``scope_key``). Usage is kept per UTC hour, so the
hour, day and month windows are all exact sums.
"""

from __future__ import annotations

import inspect
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import duckdb

Window = Literal["hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("hour", "day", "month")


def scope_key(kind: str, value: str) -> str:
    """The ledger key of a budget scope: ``kind:value``."""
    return f"{kind}:{value}"


def utc(now: datetime | str | None) -> datetime:
    """``now`` as an aware UTC datetime (naive datetimes are taken to be UTC; ISO strings accepted)."""
    if now is None:
        return datetime.now(timezone.utc)
    if now.__class__ is datetime and now.tzinfo is timezone.utc:
        return now  # already UTC (the common case on the hot path)
    if isinstance(now, str):
        now = datetime.fromisoformat(now.replace("Z", "+00:00"))
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


def window_start(window: Window, now: datetime | None = None) -> datetime:
    """Start of the calendar UTC ``window`` (hour, day or month) containing ``now``."""
    t = utc(now)
    if window == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if window == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown budget window {window!r}")


def window_end(window: Window, now: datetime | None = None) -> datetime:
    """End (exclusive) of the calendar UTC ``window`` containing ``now``: the next window's start."""
    return _next_start(window, window_start(window, now))


def window_bounds(window: Window, now: datetime | None = None) -> tuple[datetime, datetime]:
    """``(window_start, window_end)`` of the calendar UTC ``window`` containing ``now``."""
    start = window_start(window, now)
    return start, _next_start(window, start)


_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def _next_start(window: Window, start: datetime) -> datetime:
    if window == "hour":
        return start + _HOUR
    if window == "day":
        return start + _DAY
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def _sum_in(buckets: dict[datetime, float], start: datetime, end: datetime | None) -> float:
    """Total of the hour buckets in ``[start, end)`` (no end when ``end`` is None)."""
    if end is None:
        return float(sum(v for h, v in buckets.items() if h >= start))
    return float(sum(v for h, v in buckets.items() if start <= h < end))


@runtime_checkable
class BudgetLedger(Protocol):
    """Where budget usage lives. Implementations must be safe to call from many threads."""

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        """Total charged to ``scope_key`` in ``unit`` in ``[window_start, window_end)``.

        ``window_end`` None means no end (everything at or after ``window_start``).
        The engine passes the end, so a decision at a past ``now`` does not count
        usage charged later.
        """
        ...

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        """Record ``amount`` of actual usage at time ``at`` (default: now)."""
        ...


class InMemoryLedger:
    """A ledger for tests and single-process use; lost when the process ends."""

    def __init__(self) -> None:
        self._hours: dict[tuple[str, str], dict[datetime, float]] = defaultdict(dict)
        self._lock = threading.Lock()

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = utc(window_start)
        end = utc(window_end) if window_end is not None else None
        with self._lock:
            buckets = self._hours.get((scope_key, unit))
            if not buckets:
                return 0.0
            return _sum_in(buckets, start, end)

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = window_start("hour", at)
        with self._lock:
            buckets = self._hours[(scope_key, unit)]
            buckets[hour] = buckets.get(hour, 0.0) + float(amount)


def windowed_usage(ledger: BudgetLedger):
    """``usage(scope_key, unit, start, end)`` for ``ledger``, called once per ledger (not per request).

    A ledger whose ``usage`` takes no ``window_end`` (written before windows had
    an end) is called without it: it counts everything from ``start`` on.
    """
    usage = ledger.usage
    try:
        params = inspect.signature(usage).parameters
    except (TypeError, ValueError):
        params = {}
    if "window_end" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return usage
    if len([p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 4 or any(
            p.kind is p.VAR_POSITIONAL for p in params.values()):
        return usage
    return lambda scope_key, unit, start, end: usage(scope_key, unit, start)


def _sql(name: str) -> str:
    return resources.files("policyengine").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")


def _naive_utc(t: datetime) -> datetime:
    return utc(t).replace(tzinfo=None)


class DuckDBLedger:
    """A durable ledger in the ``budget_usage`` table of a DuckDB database.

    Pass a path (the file is created if needed) or an open connection that the
    orchestrator or the audit log already use: the ledger then works on its own
    cursor of that connection, so the same database file is shared safely.

    Reads are served from a write-through cache of each (scope, unit)'s hour
    buckets, loaded on first use, so a decision does not pay for a query. A DuckDB
    file has one writing process at a time; within it, charge through one ledger
    per database (or call ``refresh()`` after writing ``budget_usage`` otherwise).
    """

    def __init__(self, path_or_connection: str | Path | duckdb.DuckDBPyConnection) -> None:
        if isinstance(path_or_connection, duckdb.DuckDBPyConnection):
            self._conn = path_or_connection.cursor()
        else:
            self._conn = duckdb.connect(str(path_or_connection))
        self._lock = threading.Lock()
        self._hours_sql = _sql("budget_hours")
        self._charge_sql = _sql("budget_charge")
        self._cache: dict[tuple[str, str], dict[datetime, float]] = {}
        with self._lock:
            self._conn.execute(_sql("budget_create"))

    def _buckets(self, scope_key: str, unit: str) -> dict[datetime, float]:
        """The hour buckets of one scope and unit (call with the lock held)."""
        buckets = self._cache.get((scope_key, unit))
        if buckets is None:
            rows = self._conn.execute(self._hours_sql, [scope_key, unit]).fetchall()
            buckets = {hour: float(amount) for hour, amount in rows}
            self._cache[(scope_key, unit)] = buckets
        return buckets

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = _naive_utc(window_start)
        end = _naive_utc(window_end) if window_end is not None else None
        with self._lock:
            buckets = self._buckets(scope_key, unit)
            return _sum_in(buckets, start, end)

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = _naive_utc(window_start("hour", at))
        with self._lock:
            self._conn.execute(self._charge_sql, [scope_key, unit, hour, float(amount)])
            buckets = self._cache.get((scope_key, unit))
            if buckets is not None:
                buckets[hour] = buckets.get(hour, 0.0) + float(amount)

    def refresh(self) -> None:
        """Forget cached usage; the next reads query the table again."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Close the ledger's cursor (and the database, when the ledger opened it)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> DuckDBLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
