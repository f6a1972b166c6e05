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

import decimal
import inspect
import math
import numbers
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol, runtime_checkable

Window = Literal["hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("hour", "day", "month")


def checked_amount(value: object, what: str = "amount") -> float:
    """``value`` as a usage amount (a finite number >= 0), else ``ValueError``: a negative charge or hold
    would give budget back, and NaN passes every ``<=`` check after it (when in doubt, refuse)."""
    number = isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool)
    amount = float(value) if number else math.nan  # type: ignore[arg-type]
    if not 0.0 <= amount < math.inf:
        raise ValueError(f"budget ledger: {what} {value!r} is not a usage amount (a finite number >= 0)")
    return amount


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


class Total:
    """One running total that its ledger keeps current in place, so a reader holding it needs no lookup or lock.

    Only ledgers that own every write to their totals (one process) hand these
    out, through ``live_total``; a reader re-asks after the window rolls over or
    the ledger's ``epoch`` changes (it dropped its totals).
    """

    __slots__ = ("value",)

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Total({self.value!r})"


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

    epoch = 0  # never drops its totals: a ``Total`` handed out stays current for the ledger's life

    def __init__(self) -> None:
        self._hours: dict[tuple[str, str], dict[datetime, float]] = defaultdict(dict)
        self._totals: dict[tuple[str, str, str, datetime], Total] = {}
        self._lock = threading.Lock()

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = utc(window_start)
        end = utc(window_end) if window_end is not None else None
        period = calendar_window(start, end)
        with self._lock:
            if period is not None:
                total = self._totals.get((scope_key, unit, period, start))
                return total.value if total is not None else 0.0
            buckets = self._hours.get((scope_key, unit))
            if not buckets:
                return 0.0
            return _sum_in(buckets, start, end)

    def window_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> float:
        """The running total of the calendar ``window`` starting at ``start`` (UTC): one lookup."""
        total = self._totals.get((scope_key, unit, window, start))  # a dict read needs no lock
        return total.value if total is not None else 0.0

    def live_total(self, scope_key: str, unit: str, window: Window, start: datetime) -> Total:
        """The ``Total`` of the calendar ``window`` starting at ``start`` (UTC), updated in place by every charge."""
        with self._lock:
            return self._cell((scope_key, unit, window, utc(start)))

    def _cell(self, key: tuple[str, str, str, datetime]) -> Total:
        """The ``Total`` of ``key``, made on first use; call with the lock held."""
        total = self._totals.get(key)
        if total is None:
            total = self._totals[key] = Total()
        return total

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        hour = window_start("hour", at)
        day = hour.replace(hour=0)
        amount = checked_amount(amount)
        with self._lock:
            buckets = self._hours[(scope_key, unit)]
            buckets[hour] = buckets.get(hour, 0.0) + amount
            for key in ((scope_key, unit, "hour", hour), (scope_key, unit, "day", day),
                        (scope_key, unit, "month", day.replace(day=1))):
                self._cell(key).value += amount


def _own(ledger: object, name: str):
    """``ledger``'s method ``name`` when the class defining it also defines the ``usage`` in force, else None.

    A subclass that overrides ``usage`` below that class may read usage its own
    way: the fast reads would no longer read the same thing.
    """
    read = getattr(ledger, name, None)
    if read is None:
        return None
    cls = type(ledger)
    owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
    if owner is None or getattr(cls, "usage", None) is not getattr(owner, "usage", None):
        return None
    return read


def window_reader(ledger: object):
    """The ledger's ``window_total(scope_key, unit, window, start)`` when it answers calendar windows from
    running totals directly, else None (the engine then calls ``usage``)."""
    return _own(ledger, "window_total")


def live_reader(ledger: object):
    """The ledger's ``live_total(scope_key, unit, window, start) -> Total`` when it keeps its running totals
    in this process and updates them in place (with an ``epoch`` that changes when it drops them), else None."""
    if not isinstance(getattr(ledger, "epoch", None), int):
        return None
    return _own(ledger, "live_total")


class WindowStarts:
    """The start and end of the calendar hour, day and month containing a time, computed once per hour.

    ``at_hour(hour)`` -> ``{window: (start, end)}`` for the UTC hour ``hour`` (hours since
    the epoch); keeps the few most recent hours (decisions of one run share their hour).
    """

    __slots__ = ("_by_hour",)

    def __init__(self) -> None:
        self._by_hour: dict[int, dict[str, tuple[datetime, datetime]]] = {}

    def at_hour(self, hour: int) -> dict[str, tuple[datetime, datetime]]:
        found = self._by_hour.get(hour)
        if found is None:
            now = datetime.fromtimestamp(hour * 3600, timezone.utc)
            found = {window: window_bounds(window, now) for window in WINDOWS}
            if len(self._by_hour) >= 8:
                self._by_hour.clear()
            self._by_hour[hour] = found
        return found


class LiveTotals:
    """For each budget, the ``Total`` of each of its limits in the current hour's windows, from ``live_total``.

    Asked of the ledger once per budget per hour (and again whenever the
    ledger's ``epoch`` changes), so a decision reads a limit's usage as one
    attribute: no window arithmetic, key building, lock or query.
    ``current(hour)`` -> ``{budget key: (Total, ...)}`` (fill it with ``load``).
    """

    __slots__ = ("_ledger", "_live_total", "_windows", "_state")

    def __init__(self, ledger: object, live_total, windows: WindowStarts) -> None:
        self._ledger = ledger
        self._live_total = live_total
        self._windows = windows
        self._state: tuple[int, int, dict[int, tuple[Total, ...]]] = (-1, -1, {})

    def current(self, hour: int) -> dict[int, tuple[Total, ...]]:
        at, epoch, totals = self._state
        now_epoch = self._ledger.epoch  # read before any load: a drop after it shows on the next decision
        if at != hour or epoch != now_epoch:
            totals = {}
            self._state = (hour, now_epoch, totals)
        return totals

    def load(self, totals: dict[int, tuple[Total, ...]], hour: int, budget) -> tuple[Total, ...]:
        """The ``Total`` of each limit of ``budget`` (a ``CompiledBudget``), kept in ``totals``."""
        bounds = self._windows.at_hour(hour)
        found = totals[budget.key] = tuple(self._live_total(budget.scope_key, limit.unit, limit.window,
                                                            bounds[limit.window][0]) for limit in budget.limits)
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
