"""Durable before answered: the server's side of the audit log (group commit).

Every request handler appends its decision with ``AuditLog.append`` and then
awaits ``durable(seq)``. One committer task waits, off the event loop, until the
highest seq appended so far is durable (``AuditLog.wait_durable``) and then
wakes every handler whose record that covered; so one DuckDB transaction and
one signature carry all the decisions that arrived while the previous commit
ran, and throughput grows with concurrency instead of paying a commit each.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..audit import AuditError, AuditLog, decision_event


class DurableAudit:
    """Append records and await their durability, one commit for many waiters."""

    def __init__(self, log: AuditLog, *, on_commit: Callable[[float, int], None] | None = None) -> None:
        self.log = log
        self.on_commit = on_commit  # (seconds, records) after each commit: metrics
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (seq, tiebreak, future)
        self._tiebreak = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-commit")
        self.failed: str | None = None

    # -- appending (on the event loop; cheap: hashing, no I/O) -----------------

    def record_decision(self, request: Any, decision: Any) -> int:
        """Append one ``decision`` event (payload as docs/audit-events.md fixes it); return its seq."""
        return self.log.append("decision", **decision_event(request, decision))

    def append(self, event: str, payload: dict[str, Any], **columns: Any) -> int:
        return self.log.append(event, payload=payload, **columns)

    @property
    def queue_depth(self) -> int:
        """Records appended and not yet known durable."""
        return self.log.size - self.log.flushed

    # -- waiting ---------------------------------------------------------------

    async def durable(self, seq: int) -> None:
        """Return once record ``seq`` is durable; raise ``AuditError`` if the log cannot make it so."""
        if self.failed:
            raise AuditError(self.failed)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._commit_loop())
        future: asyncio.Future[None] = loop.create_future()
        self._tiebreak += 1
        heapq.heappush(self._waiters, (seq, self._tiebreak, future))
        assert self._wake is not None
        self._wake.set()
        await future

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                continue
            target = self.log.size  # everything appended so far: later arrivals ride along
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._pool, self.log.wait_durable, target)
            except Exception as error:  # noqa: BLE001 - every waiter must hear of it, fail closed
                self.failed = str(error) if isinstance(error, AuditError) else f"audit write failed: {error}"
                while self._waiters:
                    _, _, future = heapq.heappop(self._waiters)
                    if not future.done():
                        future.set_exception(AuditError(self.failed))
                return
            done = 0
            while self._waiters and self._waiters[0][0] <= target:
                _, _, future = heapq.heappop(self._waiters)
                if not future.done():
                    future.set_result(None)
                done += 1
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, done)
            if self._waiters:
                self._wake.set()

    def writable(self) -> bool:
        """Whether the log still accepts and commits records (``/ready``)."""
        if self.failed:
            return False
        try:
            self.log.flush()
        except AuditError as error:
            self.failed = str(error)
            return False
        return True

    def close(self) -> None:
        """Sign a final checkpoint and release the file."""
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=True)
        self.log.close()
