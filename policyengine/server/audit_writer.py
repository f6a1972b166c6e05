"""Durable before answered: the server's side of the audit log (group commit).

Every request handler appends its decision with ``AuditLog.append`` and then
awaits ``durable(seq)``. One committer thread, woken when a handler waits,
commits everything appended so far (``AuditLog.flush``) and hands the highest
durable seq back to the event loop, which wakes every handler it covers; so one
DuckDB transaction and one signature carry all the decisions that arrived while
the previous commit ran, and throughput grows with concurrency instead of
paying a commit each.

The answers wait for the records and the checkpoint that signs them; the
reports' ``audit_facts`` rows of those records (facts.py) are written by a
second thread, on the log's facts cursor, beside the commits and never in front
of one: once no commit has been made for ``_FACTS_IDLE``, or when
``_FACTS_BATCH`` of them wait. A facts row costs DuckDB about what its record
costs, so writing it in the committer thread, even between answers, made the
next caller wait for it (the gateway's p99).

The committer flushes itself rather than asking the log's own writer thread
(``wait_durable``) through an executor: each thread hop costs a GIL hand-off,
which waits up to the switch interval while the event loop is busy, and that
wait, not the disk, was most of a commit's time under load.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..audit import AuditError, AuditLog, decision_event


_FACTS_IDLE = 0.02  # seconds without a commit before the answered records' facts are written
_FACTS_BATCH = 256  # ... or at once, when this many wait (AuditLog's small batches: one appender flush)


def _failure(error: Exception) -> str:
    return str(error) if isinstance(error, AuditError) else f"audit write failed: {error}"


class DurableAudit:
    """Append records and await their durability, one commit for many waiters."""

    def __init__(self, log: AuditLog, *, on_commit: Callable[[float, int], None] | None = None) -> None:
        self.log = log
        self.on_commit = on_commit  # (seconds, records) after each commit: metrics
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (seq, tiebreak, future)
        self._tiebreak = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # where the committer hands results back
        self._wanted = threading.Event()  # set when a handler waits: the committer commits what is appended
        self._thread: threading.Thread | None = None
        self._committed = threading.Event()  # set after each commit that left facts due: the facts thread writes them
        self._facts_thread: threading.Thread | None = None
        self._stopping = False
        self._committing = False  # on the loop: a commit is asked for or under way and not yet handed back
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
        if self._loop is not loop or self._thread is None:
            self._start(loop)
        future: asyncio.Future[None] = loop.create_future()
        self._tiebreak += 1
        heapq.heappush(self._waiters, (seq, self._tiebreak, future))
        if not self._committing:  # else the commit under way hands back first, then the next one starts
            self._committing = True
            self._wanted.set()
        await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:  # a new loop (tests run several): a commit asked on the old one answers nobody
            self._committing = False
        self._loop = loop
        if self._thread is None:
            self._thread = threading.Thread(target=self._commit_loop, name="audit-commit", daemon=True)
            self._thread.start()
            self._facts_thread = threading.Thread(target=self._facts_loop, name="audit-facts", daemon=True)
            self._facts_thread.start()

    def _commit_loop(self) -> None:
        """The committer thread: commit whatever is appended whenever asked, until stopped or failed.

        It is asked by the first handler to wait while no commit is under way,
        and by ``_release`` when handlers came in while one was: so the next
        commit starts once the loop has taken the last one's answers, and
        carries every record appended until then. ``_wanted`` is cleared before
        the flush, so an ask that comes during it is not lost.
        """
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            started = time.perf_counter()
            try:
                flushed = self.log.flush(answer_first=True)
            except Exception as error:  # noqa: BLE001 - every waiter must hear of it, fail closed
                self._post(self._fail, _failure(error))
                return
            self._post(self._release, flushed, time.perf_counter() - started)
            if self.log.facts_due:  # (a decision server's records have none: its facts thread stays asleep)
                self._committed.set()

    def _facts_loop(self) -> None:
        """The facts thread: after commits, print the answered records' facts and write them once no commit has
        come for ``_FACTS_IDLE`` (or ``_FACTS_BATCH`` wait), until stopped; a failure fails the log for good,
        and the next waiter hears of it."""
        while not self._stopping:  # (checked before waiting: stop's wake-up may have been taken below)
            self._committed.wait()
            self._committed.clear()
            if self._stopping:
                return
            try:
                while True:
                    self.log.prepare_facts()  # their Python part, outside the database
                    due = self.log.facts_due
                    if not due or self._stopping:
                        break
                    if due < _FACTS_BATCH and self._committed.wait(_FACTS_IDLE):
                        self._committed.clear()  # more answers came: gather theirs too
                        continue
                    self.log.write_facts()
            except Exception as error:  # noqa: BLE001 - fail closed, as a commit would
                self._post(self._fail, _failure(error))
                return

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the server is shutting down, nobody waits
            pass

    def _release(self, flushed: int, seconds: float) -> None:
        """On the loop: wake every handler whose record the commit covered."""
        waiters = self._waiters
        done = 0
        while waiters and waiters[0][0] <= flushed:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
            done += 1
        if self.on_commit is not None and done:
            self.on_commit(seconds, done)
        self._committing = bool(waiters)
        if waiters:  # appended while that commit ran: they ride the next one together
            self._wanted.set()

    def _fail(self, failed: str) -> None:
        self.failed = failed
        while self._waiters:
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                future.set_exception(AuditError(failed))

    def writable(self) -> bool:
        """Whether the log still accepts and commits records (``/ready``)."""
        if self.failed:
            return False
        try:
            self.log.flush(answer_first=True)  # on the event loop: the facts rows stay the committer's
        except AuditError as error:
            self.failed = str(error)
            return False
        return True

    def stop(self) -> None:
        """Stop the committer and facts threads (after the commit under way); the log stays open, and its close
        writes the facts still due."""
        self._stopping = True
        self._wanted.set()
        self._committed.set()
        for thread in (self._thread, self._facts_thread):
            if thread is not None:
                thread.join()

    def close(self) -> None:
        """Stop the committer, sign a final checkpoint and release the file. A log that failed says, in one line on
        stderr, which records it did not write: their callers were refused, the server stops all the same."""
        self.stop()
        try:
            self.log.close()
        except AuditError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
