"""The block list: models suspended by a bias or drift monitor (``on breach block``) until a person lifts it.

The monitor (``reporting/monitor.py``) decides *when* to block; this module
owns *where* blocks live (the ``model_blocks`` table of the embedded store) and
how they are read: the engine's callers read the suspended set with
``blocked_models`` and deny those models. Rows are never deleted: the table is
the history of every suspension and who lifted it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from .files import StoreError, open_duckdb, packaged_sql


def _sql(name: str) -> str:
    return packaged_sql("policyengine.store", f"embedded/{name}")


def has_blocks_table(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(_sql("has_table"), {"name": "model_blocks"}).fetchone()
    return bool(row and row[0] > 0)


def ensure_blocks_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_sql("model_blocks_create"))


def add_block(con: duckdb.DuckDBPyConnection, model: str, rule: str, reason: str, at: datetime) -> None:
    """Suspend ``model`` because ``rule`` breached (a second breach while blocked adds history only)."""
    con.execute(_sql("model_blocks_add"), {"model": model, "rule": rule, "reason": reason, "at": at})


def lift_blocks(con: duckdb.DuckDBPyConnection, model: str, *, at: datetime, by: str, note: str | None) -> int:
    """Lift every open block of ``model``; how many were open."""
    row = con.execute(_sql("model_blocks_lift"), {"model": model, "at": at, "by": by, "note": note}).fetchone()
    return int(row[0]) if row else 0


def active_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, datetime]]:
    """(model, rule, reason, blocked_at) of every suspended model (the table must exist)."""
    return [tuple(r) for r in con.execute(_sql("model_blocks_active")).fetchall()]  # type: ignore[misc]


def blocked_models(db: str | Path | duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Models suspended in ``db`` (empty if the file or table does not exist); ``StoreError`` if not DuckDB.

    ``db`` may be a connection the caller already holds: DuckDB refuses a second,
    read-only connection to a file this process has open for writing.
    """
    if isinstance(db, duckdb.DuckDBPyConnection):
        return frozenset(r[0] for r in active_rows(db)) if has_blocks_table(db) else frozenset()
    if not Path(db).exists():
        return frozenset()
    con = open_duckdb(db, read_only=True, external_access=False)
    try:
        return frozenset(r[0] for r in active_rows(con)) if has_blocks_table(con) else frozenset()
    finally:
        con.close()


def serving_blocks(db: str | Path) -> frozenset[str] | UnreadBlockList:
    """The models suspended in ``db`` for a command that decides (``serve``, the gateway, ``eval``); when the
    file's list cannot be read (a file that stores code, one locked by another process), a list that refuses
    every model decision naming why: a read error never reads as "nothing blocked"."""
    try:
        return blocked_models(db)
    except (StoreError, duckdb.Error) as error:
        return UnreadBlockList(f"{db}: {str(error).splitlines()[0]}" if isinstance(error, duckdb.Error)
                               else str(error))


class UnreadBlockList:
    """The block list of a database that could not be read: asking it raises ``StoreError`` (the engine then
    denies the decision, naming why), since any model may be blocked there."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self) -> None:
        raise StoreError(f"the model block list could not be read ({self.reason}); a blocked model would not "
                         "be seen, so model decisions are refused")

    def __contains__(self, model: object) -> bool:
        self._refuse()
        return True

    def __iter__(self) -> Iterator[str]:
        self._refuse()
        return iter(())

    def __len__(self) -> int:
        self._refuse()
        return 0


def active_blocks(db: str | Path) -> list[tuple[str, str, str, datetime]]:
    """(model, rule, reason, blocked_at) of every suspended model in the file ``db``."""
    con = open_duckdb(db, read_only=True, external_access=False, create=False)
    try:
        return active_rows(con) if has_blocks_table(con) else []
    finally:
        con.close()


class EmbeddedBlockList:
    """``BlockList`` over a connection to the embedded store (re-read on every call: a monitor may add blocks)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def blocked(self) -> frozenset[str]:
        return blocked_models(self._con)

    def active(self) -> list[tuple[str, str, str, datetime]]:
        return active_rows(self._con) if has_blocks_table(self._con) else []

    def block(self, model: str, rule: str, reason: str, at: datetime) -> None:
        ensure_blocks_table(self._con)
        add_block(self._con, model, rule, reason, at)

    def lift(self, model: str, *, at: datetime, by: str, note: str | None) -> int:
        return lift_blocks(self._con, model, at=at, by=by, note=note) if has_blocks_table(self._con) else 0


class LiveBlockList:
    """The engine's view of a shared block list: a ``Container[str]`` re-read at most every ``max_age`` seconds.

    For block lists other processes change (PostgreSQL): a block a monitor adds
    anywhere denies the model here within ``max_age``, without a round trip per
    decision. The first read happens now (an unreachable store fails here). A
    later failed re-read (any error: a lost connection, a missing or locked
    table) keeps the last list read and tries again next time; once no read has
    succeeded for ``stale_after`` seconds, the list is no longer known, and asking
    it raises ``StoreError`` (the engine denies the decision, naming why) until a
    read succeeds: a block added elsewhere meanwhile would not be seen here.
    """

    def __init__(self, source: Any, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 stale_after: float = 10.0) -> None:
        self._source = source
        self._max_age = max_age
        self._stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._models = frozenset(source.blocked())
        self._read_at = self._good_at = clock()
        self._failure = ""

    def _current(self) -> frozenset[str]:
        now = self._clock()
        if now - self._read_at >= self._max_age and self._lock.acquire(blocking=False):
            try:
                self._models = frozenset(self._source.blocked())
                self._good_at = now
            except Exception as error:  # noqa: BLE001 - whatever failed, the list was not read; judged below
                self._failure = str(error).splitlines()[0] if str(error) else type(error).__name__
            finally:
                self._read_at = now
                self._lock.release()
        if now - self._good_at > self._stale_after:  # also while another thread's read hangs on a lock
            raise StoreError(f"the shared block list has not been read for {now - self._good_at:.0f} s "
                             f"({self._failure or 'a read is still waiting'}); a model blocked meanwhile would "
                             "not be seen, so model decisions are refused until it is read")
        return self._models

    def __contains__(self, model: object) -> bool:
        return model in self._current()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._current()))

    def __len__(self) -> int:
        return len(self._current())
