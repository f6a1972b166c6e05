"""Queued runs and approval gates of the embedded store (DuckDB, one process, many threads).

A DuckDB file has one writing process, so a lock per store serialises claims
and decisions among the process's threads; the SQL is the PostgreSQL store's
without its row locking. The orchestrator's own run journal stays in
``orchestrator/state.py``; these tables are the seam several workers share.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from ..budgets import utc
from .files import packaged_sql
from .protocols import PendingApproval, QueuedRun


def _sql(name: str) -> str:
    return packaged_sql("policyengine.store", f"embedded/{name}")


def _naive(t: datetime | None) -> datetime | None:
    return None if t is None else utc(t).replace(tzinfo=None)


def _run(row: Sequence[Any]) -> QueuedRun:
    return QueuedRun(row[0], row[1], json.loads(row[2]), row[3], row[4])


def _approval(row: Sequence[Any]) -> PendingApproval:
    deadline = None if row[4] is None else utc(row[4])
    return PendingApproval(row[0], row[1], row[2], row[3], deadline, row[5], row[6])


class _Tables:
    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn.cursor()
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(_sql("store_create"))

    def _one(self, name: str, params: Mapping[str, Any]) -> Any:
        return self._conn.execute(_sql(name), dict(params)).fetchone()

    def _all(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        return self._conn.execute(_sql(name), dict(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmbeddedRunStore(_Tables):
    """``RunStore`` in a DuckDB file."""

    def enqueue(self, run_id: str, workflow: str, input: Mapping[str, Any]) -> None:
        with self._lock:
            self._conn.execute(_sql("runs_enqueue"), {"run_id": run_id, "workflow": workflow,
                                                      "input": json.dumps(dict(input), sort_keys=True)})

    def claim(self, worker: str, limit: int = 1) -> list[QueuedRun]:
        with self._lock:
            return [_run(r) for r in self._all("runs_claim", {"worker": worker, "limit": int(limit)})]

    def record_effect(self, run_id: str, idem_key: str, effect: str, result: Mapping[str, Any]) -> bool:
        with self._lock:
            return self._one("effects_record", {"idem_key": idem_key, "run_id": run_id, "effect": effect,
                                                "result": json.dumps(dict(result), sort_keys=True)}) is not None

    def effect(self, idem_key: str) -> Mapping[str, Any] | None:
        with self._lock:
            row = self._one("effects_get", {"idem_key": idem_key})
        return None if row is None else json.loads(row[0])

    def finish(self, run_id: str, worker: str, status: str) -> bool:
        with self._lock:
            return self._one("runs_finish", {"run_id": run_id, "worker": worker, "status": status}) is not None

    def resume(self, run_id: str) -> bool:
        with self._lock:
            return self._one("runs_resume", {"run_id": run_id}) is not None

    def requeue_abandoned(self, workers_alive: Sequence[str]) -> int:
        with self._lock:
            return len(self._all("runs_requeue", {"alive": list(workers_alive)}))

    def get(self, run_id: str) -> QueuedRun | None:
        with self._lock:
            row = self._one("runs_get", {"run_id": run_id})
        return None if row is None else _run(row)


class EmbeddedApprovalQueue(_Tables):
    """``ApprovalQueue`` in a DuckDB file."""

    def open(self, run_id: str, gate: str, role: str, requester: str, deadline: datetime | None) -> None:
        with self._lock:
            self._conn.execute(_sql("approvals_open"), {"run_id": run_id, "gate": gate, "role": role,
                                                        "requester": requester, "deadline": _naive(deadline)})

    def decide(self, run_id: str, gate: str, user: str, approve: bool, at: datetime | None = None) -> bool:
        with self._lock:
            return self._one("approvals_decide", {
                "run_id": run_id, "gate": gate, "user": user, "status": "approved" if approve else "rejected",
                "at": _naive(utc(at))}) is not None

    def expire_overdue(self, now: datetime) -> list[PendingApproval]:
        with self._lock:
            return [_approval(r) for r in self._all("approvals_expire", {"now": _naive(now)})]

    def get(self, run_id: str, gate: str) -> PendingApproval | None:
        with self._lock:
            row = self._one("approvals_get", {"run_id": run_id, "gate": gate})
        return None if row is None else _approval(row)
