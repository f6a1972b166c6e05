"""Shared state behind one seam: budgets, runs, approvals, block list, directory and rate limits.

``open_store(state)`` picks the engine from the ``--state`` value: nothing or a
file path is the embedded store (DuckDB, one process, the default and what the
demo uses); ``postgresql://...`` is PostgreSQL, shared by every worker and host
that points at it. Rate limits live in-process or in Redis (``redis://...``).
See docs/state.md.
"""

from __future__ import annotations

from .files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH, StoreError, open_duckdb, packaged_sql
from .protocols import (
    DEFAULT_RESERVATION_TTL,
    ApprovalQueue,
    BlockList,
    BudgetLedger,
    Directory,
    PendingApproval,
    QueuedRun,
    Reservation,
    RunStore,
)
from .stores import Store, open_store

__all__ = [
    "DEFAULT_DB_PATH", "DEFAULT_KEY_PATH", "DEFAULT_RESERVATION_TTL", "ApprovalQueue", "BlockList", "BudgetLedger",
    "Directory", "PendingApproval", "QueuedRun", "Reservation", "RunStore", "Store", "StoreError", "open_duckdb",
    "open_store", "packaged_sql",
]
