"""The block list: models suspended by a bias or drift monitor (``on breach block``) until a person lifts it.

The monitor (``reporting/monitor.py``) decides *when* to block; this module
owns *where* blocks live (the ``model_blocks`` table of the embedded store) and
how they are read: the engine's callers read the suspended set with
``blocked_models`` and deny those models. Rows are never deleted: the table is
the history of every suspension and who lifted it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from .files import open_duckdb, packaged_sql


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
