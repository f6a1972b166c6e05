"""The PostgreSQL store: state shared by every worker process and host that points at one database.

Budget reservations are serialised per scope with a transaction-scoped advisory
lock and admitted by one conditional INSERT (spent + holds + estimate <= limit),
so no two callers anywhere can both take the last of a budget. Runs are claimed
with ``FOR UPDATE SKIP LOCKED`` and approvals decided by a conditional UPDATE,
so each is taken by exactly one worker. Needs ``psycopg`` 3 (extra ``postgres``).
"""

from __future__ import annotations

import json
import queue
import select
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from ..budgets import Window, calendar_window, checked_amount, utc, window_bounds, window_start
from .files import StoreError, packaged_sql
from .holds import settle_amount
from .protocols import DEFAULT_RESERVATION_TTL, PendingApproval, QueuedRun, Reservation


def _sql(name: str) -> str:
    return packaged_sql("policyengine.store", f"postgres/{name}")


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


POOLED_SETTINGS = ("SET lock_timeout = '5s'", "SET statement_timeout = '30s'")
"""A pooled statement waits at most 5 s for a lock (another worker holding a budget's scope, a long
transaction) and runs at most 30 s, then fails: the caller denies (fail closed) instead of holding its
worker's event loop for as long as the database is stuck. ``session()`` connections, which hold a worker's
advisory lock for the process's life, keep PostgreSQL's defaults."""


class ConnectionPool:
    """A small pool of psycopg connections shared by a process's threads (created on demand up to ``size``)."""

    def __init__(self, url: str, size: int = 8, timeout: float = 30.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL state needs psycopg: pip install 'policyengine[postgres]'") from None
        self._psycopg = psycopg
        self.url = url
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._size = size
        self._opened = 0
        self._lock = threading.Lock()
        self._timeout = timeout
        self._closed = False
        with self.connection() as conn, conn.transaction():
            conn.execute(_sql("schema_lock"))
            conn.execute(_sql("create"))

    def _connect(self, *, pooled: bool = False):
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"{_redact(self.url)}: cannot connect to PostgreSQL ({first})") from None
        conn.execute("SET TIME ZONE 'UTC'")
        if pooled:
            for setting in POOLED_SETTINGS:
                conn.execute(setting)
        return conn

    def session(self) -> Any:
        """A connection of its own, outside the pool, for session state (a worker's advisory lock); caller closes it."""
        if self._closed:
            raise StoreError(f"{_redact(self.url)}: store is closed")
        return self._connect()

    def _alive(self, conn: Any) -> bool:
        """Whether an idle pooled connection may be handed out: open, outside a transaction, and with nothing
        to read. An idle connection is sent nothing, so bytes waiting (or end of file) mean the server ended
        it (a restart, ``pg_terminate_backend``): checked without a round trip."""
        if conn.closed or conn.broken or conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            return False
        try:
            poller = select.poll()  # not select(): descriptors past 1024 are common in a busy server
            poller.register(conn.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def _discard(self, conn: Any) -> None:
        try:
            conn.close()
        finally:
            with self._lock:
                self._opened -= 1

    def _checkout(self) -> Any:
        """An idle connection that is still alive (dead ones are closed), else a new one, else wait for one."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if self._alive(conn):
                return conn
            self._discard(conn)
        while True:
            with self._lock:
                grow = self._opened < self._size
                if grow:
                    self._opened += 1
            if grow:
                try:
                    return self._connect(pooled=True)
                except BaseException:
                    with self._lock:
                        self._opened -= 1
                    raise
            try:
                conn = self._idle.get(timeout=self._timeout)
            except queue.Empty:
                raise StoreError(f"{_redact(self.url)}: no free connection within {self._timeout:g} s") from None
            if self._alive(conn):
                return conn
            self._discard(conn)  # its slot is free again: connect anew

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for the duration of the block (autocommit; use ``conn.transaction()`` for more)."""
        if self._closed:
            raise StoreError(f"{_redact(self.url)}: store is closed")
        conn = self._checkout()
        broken = False
        try:
            yield conn
        except self._psycopg.OperationalError:
            broken = True
            raise
        finally:
            if broken or conn.closed or self._closed:
                conn.close()
                with self._lock:
                    self._opened -= 1
            else:
                self._idle.put(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def connect_pool(url: str, size: int = 8) -> ConnectionPool:
    """Open (and create the tables of) the PostgreSQL store at ``url``."""
    return ConnectionPool(url, size)


class PostgresLedger:
    """``BudgetLedger`` in PostgreSQL; every read and write goes to the server (no cache: others write too)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def usage(self, scope_key: str, unit: str, window_start: datetime, window_end: datetime | None = None) -> float:
        start = utc(window_start)
        end = utc(window_end) if window_end is not None else None
        period = calendar_window(start, end)
        with self.pool.connection() as conn:
            if period is not None:
                row = conn.execute(_sql("budget_total"), {"scope_key": scope_key, "unit": unit, "period": period,
                                                          "start": start}).fetchone()
            else:
                row = conn.execute(_sql("budget_between"), {"scope_key": scope_key, "unit": unit, "start": start,
                                                            "end": end}).fetchone()
        return float(row[0]) if row else 0.0

    @staticmethod
    def _charge(conn: Any, scope_key: str, unit: str, amount: float, at: datetime | None) -> None:
        hour = window_start("hour", at)
        day = hour.replace(hour=0)
        params = {"scope_key": scope_key, "unit": unit, "amount": checked_amount(amount), "hour": hour, "day": day,
                  "month": day.replace(day=1)}
        conn.execute(_sql("budget_charge_hour"), params)
        conn.execute(_sql("budget_charge_totals"), params)

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        with self.pool.connection() as conn, conn.transaction():
            self._charge(conn, scope_key, unit, amount, at)

    def reserve(self, scope_key: str, unit: str, estimate: float, *, limit: float, window: Window = "month",
                at: datetime | None = None, ttl: timedelta = DEFAULT_RESERVATION_TTL) -> Reservation | None:
        t = utc(at)
        limit = checked_amount(limit, "limit")
        r = Reservation(uuid.uuid4().hex, scope_key, unit, checked_amount(estimate, "estimate"), t, t + ttl)
        key = {"scope_key": scope_key, "unit": unit}
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(_sql("budget_lock"), key)
            self._charge_expired(conn, conn.execute(_sql("budget_expire_scope"), {**key, "now": t}).fetchall())
            row = conn.execute(_sql("budget_reserve"), {
                **key, "id": r.id, "amount": r.amount, "at": r.at, "expires_at": r.expires_at,
                "period": window, "period_start": window_bounds(window, t)[0], "limit": limit}).fetchone()
        return r if row else None

    def _charge_expired(self, conn: Any, rows: Sequence[Sequence[Any]]) -> None:
        """Charge expired holds at their estimate: nobody settled or released them, so the call may have
        happened (its holder died, or could not reach the ledger to settle): when in doubt, charge."""
        for _, scope_key, unit, amount, at in rows:
            self._charge(conn, scope_key, unit, amount, at)

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Charge ``actual`` and mark the hold settled, in one transaction: a hold released before is charged
        ``actual`` too (the call happened after all), one that expired (charged at its estimate) what ``actual``
        passes that estimate by, and one already settled nothing. That makes a settle safe to repeat, so a
        connection that fails under it is retried once on a fresh one (the first try committed, or did nothing).
        A hold whose fate was forgotten (a day past its deadline) is charged ``actual``: when in doubt, charge."""
        actual, unusable = settle_amount(reservation, actual)
        for attempt in (1, 2):
            try:
                with self.pool.connection() as conn, conn.transaction():
                    row = conn.execute(_sql("budget_reservation_settle"), {"id": reservation.id}).fetchone()
                    if row is None and conn.execute(_sql("budget_reservation_known"),
                                                    {"id": reservation.id}).fetchone() is None:
                        row = ("forgotten", 0.0)  # its fate is no longer kept: charged, as other ledgers charge
                    if row is not None:  # held, released, forgotten: the usage; expired: what passes the estimate
                        state, estimate = row
                        amount = max(0.0, float(actual) - float(estimate)) if state == "expired" else float(actual)
                        if amount:
                            self._charge(conn, reservation.scope_key, reservation.unit, amount, reservation.at)
                if unusable is not None:
                    raise unusable
                return
            except self.pool._psycopg.OperationalError as error:
                if attempt == 2:
                    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    raise StoreError(f"{_redact(self.pool.url)}: could not settle a budget hold ({first})") from None

    def release(self, reservation: Reservation) -> None:
        with self.pool.connection() as conn:
            conn.execute(_sql("budget_reservation_drop"), {"id": reservation.id})

    def expire(self, now: datetime | None = None) -> int:
        """Drop the holds whose deadline passed, charging each at its estimate; how many."""
        with self.pool.connection() as conn, conn.transaction():
            rows = conn.execute(_sql("budget_expire"), {"now": utc(now)}).fetchall()
            self._charge_expired(conn, rows)
        return len(rows)

    def reserved(self, scope_key: str, unit: str) -> float:
        with self.pool.connection() as conn:
            row = conn.execute(_sql("budget_reserved"), {"scope_key": scope_key, "unit": unit}).fetchone()
        return float(row[0]) if row else 0.0

    def close(self) -> None:
        """The pool belongs to the store; closing the ledger alone does nothing."""


def _run(row: Sequence[Any]) -> QueuedRun:
    return QueuedRun(row[0], row[1], row[2], row[3], row[4])


def _approval(row: Sequence[Any]) -> PendingApproval:
    return PendingApproval(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


class PostgresRunStore:
    """``RunStore`` in PostgreSQL: claims use ``FOR UPDATE SKIP LOCKED``, effects a unique idempotency key."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def _one(self, name: str, params: Mapping[str, Any]) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(_sql(name), dict(params)).fetchone()

    def _all(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        with self.pool.connection() as conn:
            return conn.execute(_sql(name), dict(params)).fetchall()

    def enqueue(self, run_id: str, workflow: str, input: Mapping[str, Any]) -> None:
        self._one_write("runs_enqueue", {"run_id": run_id, "workflow": workflow,
                                         "input": json.dumps(dict(input), sort_keys=True)})

    def _one_write(self, name: str, params: Mapping[str, Any]) -> None:
        with self.pool.connection() as conn:
            conn.execute(_sql(name), dict(params))

    def claim(self, worker: str, limit: int = 1) -> list[QueuedRun]:
        return [_run(r) for r in self._all("runs_claim", {"worker": worker, "limit": int(limit)})]

    def record_effect(self, run_id: str, idem_key: str, effect: str, result: Mapping[str, Any]) -> bool:
        return self._one("effects_record", {"idem_key": idem_key, "run_id": run_id, "effect": effect,
                                             "result": json.dumps(dict(result), sort_keys=True)}) is not None

    def effect(self, idem_key: str) -> Mapping[str, Any] | None:
        row = self._one("effects_get", {"idem_key": idem_key})
        return None if row is None else row[0]

    def finish(self, run_id: str, worker: str, status: str) -> bool:
        return self._one("runs_finish", {"run_id": run_id, "worker": worker, "status": status}) is not None

    def resume(self, run_id: str) -> bool:
        return self._one("runs_resume", {"run_id": run_id}) is not None

    def requeue_abandoned(self, workers_alive: Sequence[str]) -> int:
        return len(self._all("runs_requeue", {"alive": list(workers_alive)}))

    def get(self, run_id: str) -> QueuedRun | None:
        row = self._one("runs_get", {"run_id": run_id})
        return None if row is None else _run(row)

    def close(self) -> None:
        """The pool belongs to the store."""


class PostgresApprovalQueue:
    """``ApprovalQueue`` in PostgreSQL: a conditional UPDATE decides or expires each gate for one caller."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def open(self, run_id: str, gate: str, role: str, requester: str, deadline: datetime | None) -> None:
        with self.pool.connection() as conn:
            conn.execute(_sql("approvals_open"), {"run_id": run_id, "gate": gate, "role": role,
                                                  "requester": requester,
                                                  "deadline": None if deadline is None else utc(deadline)})

    def decide(self, run_id: str, gate: str, user: str, approve: bool, at: datetime | None = None) -> bool:
        with self.pool.connection() as conn:
            return conn.execute(_sql("approvals_decide"), {
                "run_id": run_id, "gate": gate, "user": user, "status": "approved" if approve else "rejected",
                "at": utc(at)}).fetchone() is not None

    def expire_overdue(self, now: datetime) -> list[PendingApproval]:
        with self.pool.connection() as conn:
            return [_approval(r) for r in conn.execute(_sql("approvals_expire"), {"now": utc(now)}).fetchall()]

    def get(self, run_id: str, gate: str) -> PendingApproval | None:
        with self.pool.connection() as conn:
            row = conn.execute(_sql("approvals_get"), {"run_id": run_id, "gate": gate}).fetchone()
        return None if row is None else _approval(row)

    def close(self) -> None:
        """The pool belongs to the store."""


class PostgresBlockList:
    """``BlockList`` in PostgreSQL: a monitor on any host blocks a model for every worker (read by ``LiveBlockList``)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def blocked(self) -> frozenset[str]:
        return frozenset(row[0] for row in self.active())

    def active(self) -> list[tuple[str, str, str, datetime]]:
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(_sql("model_blocks_active")).fetchall()]  # type: ignore[misc]

    def block(self, model: str, rule: str, reason: str, at: datetime) -> None:
        with self.pool.connection() as conn:
            conn.execute(_sql("model_blocks_add"), {"model": model, "rule": rule, "reason": reason, "at": utc(at)})

    def lift(self, model: str, *, at: datetime, by: str, note: str | None) -> int:
        with self.pool.connection() as conn:
            return len(conn.execute(_sql("model_blocks_lift"), {"model": model, "at": utc(at), "by": by,
                                                                 "note": note}).fetchall())

    def close(self) -> None:
        """The pool belongs to the store."""


class PostgresDirectory:
    """``Directory`` in PostgreSQL: one user directory for every worker, replaced whole from a file's users."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def roles(self) -> Mapping[str, tuple[str, ...]]:
        with self.pool.connection() as conn:
            return {r[0]: tuple(r[2]) for r in conn.execute(_sql("directory_roles")).fetchall()}

    def names(self) -> Mapping[str, str]:
        with self.pool.connection() as conn:
            return {r[0]: r[1] for r in conn.execute(_sql("directory_roles")).fetchall()}

    def replace(self, users: Sequence[tuple[str, str, Sequence[str]]]) -> int:
        """Make ``users`` (id, name, roles) the whole directory, in one transaction; how many users."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(_sql("directory_clear"))
            for user_id, name, roles in users:
                conn.execute(_sql("directory_put"), {"user_id": user_id, "name": name, "roles": list(roles)})
        return len(users)

    def close(self) -> None:
        """The pool belongs to the store."""
