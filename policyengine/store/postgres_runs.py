"""Durable run state in PostgreSQL: the orchestrator's runs, journal, approvals and effects, shared by workers.

Same records and buffering as the embedded ``StateStore`` (writes are buffered
and made durable by ``flush``; reads see buffered rows first). What differs is
that several workers, on any host, drive runs from one database:

- each writing store holds a session advisory lock for its life (its
  *liveness lock*); a worker whose session ended, cleanly or not, no longer
  holds it, and the runs it was driving become claimable;
- a run being driven is held by one worker (``orch_runs.worker_lock``);
  interrupted runs are claimed one at a time with ``FOR UPDATE SKIP LOCKED``;
- a decision (approval, rejection, expiry) takes its waiting run by a
  conditional UPDATE (``status = 'waiting_approval'``), so exactly one decider
  anywhere wins and the run resumes once;
- before a side effect the intent is committed only if this worker still
  holds the run with a live lock, and receipts are keyed by the idempotency
  key, so a second worker restores the receipt instead of repeating the effect.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from typing import Any

from ..orchestrator.state import (
    RECORD_ROW,
    ApprovalRecord,
    BufferedRunState,
    EffectRecord,
    RunRecord,
    StepRecord,
    now_utc,
)
from .files import StoreError
from .postgres import ConnectionPool, _redact, _sql

_UPSERT = {StepRecord: "orch_step_upsert", ApprovalRecord: "orch_approval_upsert", EffectRecord: "orch_effect_insert"}


class PostgresStateStore(BufferedRunState):
    """Run state in PostgreSQL for one worker (``read_only``: a viewer, no liveness lock, no writes).

    The buffer and the reads are ``BufferedRunState``'s, over the ``orch_*`` SQL files.
    """

    def __init__(self, pool: ConnectionPool, *, read_only: bool = False) -> None:
        super().__init__()
        self.pool = pool
        self.read_only = read_only
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.worker_lock: int | None = None
        self._session: Any = None
        if not read_only:
            self._hold_liveness_lock()

    def _hold_liveness_lock(self) -> None:
        """Take a free key of the worker lock namespace on a connection kept open until ``close``."""
        self._session = self.pool.session()
        try:
            for _ in range(64):
                key = secrets.randbelow(2**31 - 2) + 1
                if self._session.execute(_sql("orch_worker_lock"), {"key": key}).fetchone()[0]:
                    self.worker_lock = key
                    return
        except BaseException:
            self._session.close()
            raise
        self._session.close()
        raise StoreError(f"{_redact(self.pool.url)}: no free worker lock after 64 tries")

    # --- writes --------------------------------------------------------------

    def flush(self) -> int:
        """Write every buffered record in one transaction; return how many.

        Refused (``StoreError``, nothing written) when another worker holds
        one of the runs now: this worker lost it and must not overwrite it.
        """
        with self._lock:
            n = sum(len(p) for p in self._pending.values())
            if not n:
                return 0
            with self.pool.connection() as conn, conn.transaction():
                self._write_pending(conn)
            self._drop_pending()
            return n

    def _write_pending(self, conn: Any) -> None:
        """Write the buffered records in ``conn``'s transaction (caller holds the lock); ``StoreError`` if a run was lost."""
        for run in self._pending[RunRecord].values():
            params = {f: getattr(run, f) for f in RunRecord.__dataclass_fields__}
            params.update(lock=self.worker_lock, worker=self.worker)
            if conn.execute(_sql("orch_run_upsert"), params).fetchone() is None:
                raise StoreError(f"run {run.run_id} is held by another worker now; "
                                 "this worker's writes for it were not made")
        with conn.cursor() as cur:
            for cls, name in _UPSERT.items():
                rows = [RECORD_ROW[cls](r) for r in self._pending[cls].values()]
                if rows:
                    cur.executemany(_sql(name), rows)

    def write_intent(self, run: RunRecord, step: str, idem_key: str) -> None:
        """Commit that ``step`` of ``run`` is about to have a side effect, with every buffered record.

        Only while this worker holds the run; the journal that led to the step
        commits with the intent, as in the embedded store.
        """
        self._writable()
        params = {f: getattr(run, f) for f in RunRecord.__dataclass_fields__}
        params.update(lock=self.worker_lock, worker=self.worker, idem_key=idem_key, step=step, created_at=now_utc())
        with self._lock:
            with self.pool.connection() as conn, conn.transaction():
                self._write_pending(conn)
                conn.execute(_sql("orch_intent_run"), params)
                if conn.execute(_sql("orch_run_held"), params).fetchone() is None:
                    raise StoreError(f"run {run.run_id}: this worker no longer holds it (another worker took it "
                                     f"over); step {step} was not performed")
                conn.execute(_sql("orch_intent"), params)
            self._drop_pending()

    def write_receipt(self, receipt: EffectRecord) -> None:
        """Commit, on its own, the result of a side effect (the first receipt of a key wins)."""
        self._writable()
        with self._lock, self.pool.connection() as conn:
            conn.execute(_sql("orch_effect_insert"), RECORD_ROW[EffectRecord](receipt))

    def claim_unfinished(self, workflows: Collection[str]) -> list[RunRecord]:
        """The next run a gone worker left running (of ``workflows``), now held by this one; [] when none is left.

        One at a time, so several workers calling this share the work.
        """
        self._writable()
        with self._lock:
            self.flush()
            return self._claim(workflows, None)

    def claim(self, run: RunRecord) -> bool:
        """Hold ``run`` to drive it: True unless another live worker holds it (or it is not running)."""
        self._writable()
        with self._lock:
            self.flush()
            return bool(self._claim([run.workflow], run.run_id))

    def _claim(self, workflows: Collection[str], run_id: str | None) -> list[RunRecord]:
        with self.pool.connection() as conn:
            rows = conn.execute(_sql("orch_runs_claim"), {"lock": self.worker_lock, "worker": self.worker,
                                                          "workflows": list(workflows), "run_id": run_id,
                                                          "limit": 1}).fetchall()
        return [RunRecord(*r) for r in rows]

    def decide(self, run: RunRecord, gates: Collection[ApprovalRecord]) -> bool:
        """Record decided ``gates`` of the waiting ``run`` and hold the run to drive it on, in one transaction.

        False (nothing written) when the run is no longer waiting or a gate is
        no longer pending: another decider, on any worker, was first.
        """
        self._writable()
        with self._lock:
            self.flush()
            try:
                with self.pool.connection() as conn, conn.transaction():
                    took = conn.execute(_sql("orch_decide_run"), {"run_id": run.run_id, "lock": self.worker_lock,
                                                                  "worker": self.worker, "at": now_utc()}).fetchone()
                    if took is None:
                        raise _Lost
                    for g in gates:
                        if conn.execute(_sql("orch_decide_gate"), {
                                "run_id": g.run_id, "step": g.step, "gate": g.gate, "status": g.status,
                                "approver": g.approver, "note": g.note,
                                "decided_at": g.decided_at}).fetchone() is None:
                            raise _Lost  # rolls the run back to waiting too
            except _Lost:
                return False
        return True

    def abandon(self) -> None:
        """Drop what was not flushed and end the session holding the liveness lock (its runs become claimable)."""
        with self._lock:
            self._drop_pending()
            if self._session is not None:
                try:
                    self._session.execute(_sql("orch_worker_unlock"), {"key": self.worker_lock})
                except Exception:  # noqa: BLE001 - a broken session holds nothing: closing it is enough
                    pass
                finally:
                    self._session.close()
                    self._session = None

    def close(self) -> None:
        with self._lock:
            if not self.read_only:
                self.flush()
            self.abandon()

    def _query(self, name: str, params: dict[str, Any]) -> list[tuple]:
        with self.pool.connection() as conn:
            return conn.execute(_sql("orch_" + name), params).fetchall()


class _Lost(Exception):
    """Rolls back a decision another decider was first to (``decide`` returns False)."""
