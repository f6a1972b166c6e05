"""Times typed by people (``--now``, report dates) and the record of a clock override.

One parser for every command: ISO 8601 with ``Z`` or an offset (none means UTC),
returned as an aware UTC datetime. Times within a day of the ends of
``datetime``'s range are refused, because window arithmetic (``until + 1 day``)
would overflow on them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

EXAMPLE = "2026-11-24T12:00:00Z"
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def parse_time(text: str, *, margin: bool = True) -> datetime:
    """``text`` as an aware UTC datetime, or ``ValueError`` whose message quotes (a shortened) ``text``.

    With ``margin`` (``--now`` and window ends) a day at either end of the calendar
    is refused too; without it (report parameters bound as values) only what
    cannot be represented in UTC is.
    """
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{shown!r} is not an ISO 8601 time such as {EXAMPLE}") from None
    try:
        aware = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except OverflowError:
        aware = None
    if aware is None:
        raise ValueError(f"{shown!r} is outside the calendar once converted to UTC (years 0001 to 9999)")
    if margin and not (_EARLIEST <= aware <= _LATEST):
        raise ValueError(f"{shown!r} is outside the supported range (0001-01-02 to 9999-12-30 UTC)")
    return aware


def clock_override_payload(now: datetime, command: str) -> dict[str, Any]:
    """The payload of a ``clock_override`` audit event: the time used, the real time and the command."""
    real = datetime.now(UTC)
    return {"now": now.isoformat(), "real_time": real.isoformat(), "command": command,
            "offset_seconds": round((now - real) / timedelta(seconds=1), 3)}
