"""``open_store``: the one function that turns a ``--state`` value into open shared state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Container
from typing import Any

from .files import DEFAULT_DB_PATH, StoreError
from .protocols import ApprovalQueue, BlockList, BudgetLedger, RunState, RunStore


@dataclass
class Store:
    """Open shared state: where it lives (``url``) and its parts. Close it when done."""

    url: str
    kind: str  # "embedded" or "postgresql"
    ledger: BudgetLedger
    runs: RunStore
    approvals: ApprovalQueue
    blocks: BlockList
    directory: Any = None  # PostgreSQL: the shared ``Directory``; embedded: None (the YAML file beside the database)
    pool: Any = None  # PostgreSQL: the connection pool every part shares
    _closers: tuple[Any, ...] = ()

    def close(self) -> None:
        for part in self._closers:
            part.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_postgres_url(state: str | None) -> bool:
    return bool(state) and str(state).startswith(("postgresql://", "postgres://"))


def open_store(state: str | Path | None = None) -> Store:
    """Open the state named by ``state``: None or a file path (embedded DuckDB) or ``postgresql://...``.

    Raises ``StoreError`` (one line) when it cannot be opened or the URL scheme is unknown.
    """
    text = str(state) if state is not None else str(DEFAULT_DB_PATH)
    if is_postgres_url(text):
        from .postgres import (
            PostgresApprovalQueue,
            PostgresBlockList,
            PostgresDirectory,
            PostgresLedger,
            PostgresRunStore,
            connect_pool,
        )
        pool = connect_pool(text)
        return Store(text, "postgresql", PostgresLedger(pool), PostgresRunStore(pool), PostgresApprovalQueue(pool),
                     PostgresBlockList(pool), PostgresDirectory(pool), pool, (pool,))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(f"--state {scheme}://...: unknown kind of state (use a DuckDB file path or postgresql://...)")
    from .blocklist import EmbeddedBlockList
    from .embedded import EmbeddedApprovalQueue, EmbeddedRunStore
    from .embedded_ledger import EmbeddedLedger
    from .files import open_duckdb
    conn = open_duckdb(text, utc=False)
    ledger = EmbeddedLedger(conn)
    runs = EmbeddedRunStore(conn)
    approvals = EmbeddedApprovalQueue(conn)
    return Store(text, "embedded", ledger, runs, approvals, EmbeddedBlockList(conn), None, None,
                 (ledger, runs, approvals, conn))


def open_run_state(store: Store, *, read_only: bool = False) -> RunState:
    """The orchestrator's run state shared by workers, in ``store`` (PostgreSQL only).

    A writing one holds a worker liveness lock until it is closed or abandoned.
    Embedded run state lives in the workflow command's own ``--db`` file.
    """
    if store.kind != "postgresql":
        raise StoreError(f"--state {store.url}: shared run state needs postgresql://...; "
                         "embedded run state is the --db file")
    from .postgres_runs import PostgresStateStore

    return PostgresStateStore(store.pool, read_only=read_only)


def open_serving_state(state: str, blocked: Container[str]) -> tuple[Store, Container[str]]:
    """Open ``state`` for a server or gateway: the store, and the block list its decisions read.

    On PostgreSQL the shared list (re-read at most once a second) replaces
    ``blocked``, so a block a monitor adds on any host denies here too. Raises
    ``StoreError`` (one line); nothing is left open then.
    """
    store = open_store(state)
    if store.kind != "postgresql":
        return store, blocked
    from .blocklist import LiveBlockList

    try:
        return store, LiveBlockList(store.blocks)
    except StoreError:
        store.close()
        raise
