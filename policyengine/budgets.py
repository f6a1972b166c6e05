"""Budget ledgers: how much each scope has used in the current calendar UTC window.

The engine only *reads* a ledger while deciding (``usage``); actual usage is
charged by the caller after a model call (``charge``), because only then is the
real token count and cost known. A scope is a string such as
``workflow:invoice-exceptions``, ``model:frontier_llm``, ``agent:invoice_classifier``
or ``role:analyst`` (see ``scope_key``). Ledgers keep running totals per
calendar UTC hour, day and month, so a decision reads one number per budget
whatever the history. Concurrent callers that must not overspend hold budget
first with ``reserve`` (see ``policyengine.store``).
"""

from __future__ import annotations

import inspect
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol, runtime_checkable

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


def calendar_window(start: datetime, end: datetime | None) -> Window | None:
    """Which calendar window ``[start, end)`` is exactly (so its running total answers it), or None."""
    if end is None or start.minute or start.second or start.microsecond:
        return None
    span = end - start
    if span == _HOUR:
        return "hour"
    if start.hour:
        return None
    if span == _DAY:
        return "day"
    if start.day == 1 and end == _next_start("month", start):
        return "month"
    return None


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
    """A ledger for tests and single-process use; lost when the process ends.

    Keeps running totals per calendar hour, day and month, so reading the usage
    of a window is one lookup however long the history; other ranges sum hours.
    """

    def __init__(self) -> None:
        self._hours: dict[tuple[str, str], dict[datetime, float]] = defaultdict(dict)
        self._totals: dict[tuple[str, str, str, datetime], float] = {}
        self._lock = threading.Lock()

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = utc(window_start)
        end = utc(window_end) if window_end is not None else None
        period = calendar_window(start, end)
        with self._lock:
            if period is not None:
                return self._totals.get((scope_key, unit, period, start), 0.0)
            buckets = self._hours.get((scope_key, unit))
            if not buckets:
                return 0.0
            return _sum_in(buckets, start, end)

    def window_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> float:
        """The running total of the calendar ``window`` starting at ``start`` (UTC): one lookup."""
        return self._totals.get((scope_key, unit, window, start), 0.0)  # a dict read needs no lock

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = window_start("hour", at)
        day = hour.replace(hour=0)
        amount = float(amount)
        with self._lock:
            buckets = self._hours[(scope_key, unit)]
            buckets[hour] = buckets.get(hour, 0.0) + amount
            for key in ((scope_key, unit, "hour", hour), (scope_key, unit, "day", day),
                        (scope_key, unit, "month", day.replace(day=1))):
                self._totals[key] = self._totals.get(key, 0.0) + amount


def window_reader(ledger: object):
    """The ledger's ``window_total(scope_key, unit, window, start)`` when it answers calendar windows from
    running totals directly, else None (the engine then calls ``usage``).

    Not used when a subclass overrides ``usage`` below the class that defines
    ``window_total``: the two would no longer read the same thing.
    """
    read = getattr(ledger, "window_total", None)
    if read is None:
        return None
    cls = type(ledger)
    owner = next((c for c in cls.__mro__ if "window_total" in c.__dict__), None)
    if owner is None or getattr(cls, "usage", None) is not getattr(owner, "usage", None):
        return None
    return read


class WindowStarts:
    """The start and end of the calendar hour, day and month containing a time, computed once per hour.

    ``bounds(now)`` -> ``{window: (start, end)}`` for an aware UTC ``now``; keeps
    the few most recent hours (decisions of one run share their hour).
    """

    __slots__ = ("_by_hour",)

    def __init__(self) -> None:
        self._by_hour: dict[int, dict[str, tuple[datetime, datetime]]] = {}

    def bounds(self, now: datetime) -> dict[str, tuple[datetime, datetime]]:
        hour = int(now.timestamp() // 3600)
        found = self._by_hour.get(hour)
        if found is None:
            found = {window: window_bounds(window, now) for window in WINDOWS}
            if len(self._by_hour) >= 8:
                self._by_hour.clear()
            self._by_hour[hour] = found
        return found


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


def __getattr__(name: str):
    """``DuckDBLedger`` is the embedded ledger of ``policyengine.store`` (kept under its old name)."""
    if name == "DuckDBLedger":
        from .store.embedded_ledger import EmbeddedLedger
        return EmbeddedLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
