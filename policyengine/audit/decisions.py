"""Record engine decisions as ``decision`` audit events (used by ``eval --audit``).

Kept apart from the writer so the engine need not know the audit tables: it
hands over a request and a Decision, and this module shapes the payload as
docs/audit-events.md fixes it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import AuditError
from .keys import load_private_key
from .log import AuditLog
from .masking import NO_MASKING, Masking


def _as_json(value: Any) -> Any:
    """A request or decision as JSON values: ``to_dict`` first (``Decision``'s is its fast ``model_dump``)."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def decision_event(request: Any, decision: Any, step: str | None = None, *,
                   masking: Masking = NO_MASKING) -> dict[str, Any]:
    """Columns and payload of one ``decision`` record (pydantic models or plain dicts).

    The payload is returned unmasked (the log masks it as it writes); the
    ``actor`` and ``workflow`` columns are read from the masked payload, so a
    dropped ``/request/principal/id`` is no actor and a hashed one is its hash.
    """
    req = _as_json(request)
    dec = _as_json(decision)
    payload: dict[str, Any] = {"request": req, "decision": dec}
    if step is not None:
        payload["step"] = step
    if isinstance(dec, dict) and dec.get("model_version") is not None:  # models_registry: the version used
        payload["model_version"] = dec["model_version"]
    shown = req if masking.empty else masking.apply(payload).get("request")  # per decision: no copy when unmasked
    principal = shown.get("principal") if isinstance(shown, dict) else None
    context = shown.get("context") if isinstance(shown, dict) else None
    actor = principal.get("id") if isinstance(principal, dict) else None
    workflow = context.get("workflow") if isinstance(context, dict) else None
    return {
        "actor": actor if isinstance(actor, str) else None,  # a malformed request's id may be anything
        "workflow": workflow if isinstance(workflow, str) else None,
        "policy_hash": (dec.get("policy_hash") or None) if isinstance(dec, dict) else None,
        "payload": payload,
    }


class DecisionRecorder:
    """``record(request, decision) -> seq`` into one log, and ``wait_durable(seq)`` before showing it to anyone."""

    def __init__(self, log: AuditLog, masking: Masking, run_id: str | None):
        self._log = log
        self._masking = masking
        self._run_id = run_id

    def __call__(self, request: Any, decision: Any) -> int:
        masking, run_id = self._masking, self._run_id
        try:
            return self._log.append("decision", run_id=run_id, **decision_event(request, decision, masking=masking))
        except AuditError:
            if "lone surrogate" not in str(sys.exc_info()[1]):
                raise
        # Not valid Unicode (a JSON "\\ud800" escape): keep the record, with such strings
        # written as the text \ud800, rather than lose the decision or stop the batch.
        from ..engine import escape_surrogates

        safe = decision_event(escape_surrogates(_as_json(request)), escape_surrogates(_as_json(decision)),
                              masking=masking)
        return self._log.append("decision", run_id=run_id, **safe)

    def wait_durable(self, seq: int) -> None:
        """Block until record ``seq`` (and all before it) is committed; AuditError if the write failed."""
        self._log.wait_durable(seq)


@contextmanager
def record_decisions(
    db: str | os.PathLike[str], key_path: str | os.PathLike[str], *, masking: Masking = NO_MASKING,
    run_id: str | None = None, clock_override: dict[str, Any] | None = None,
) -> Iterator[DecisionRecorder]:
    """Open the log and yield a ``DecisionRecorder``; closes (and signs) on exit.

    Callers show a decision only after ``recorder.wait_durable(seq)`` returned
    for its record (``eval --audit`` does so once per group of decisions).
    ``clock_override`` (the payload of a ``clock_override`` event) is recorded first
    when the decisions are made as of a time other than now.
    """
    key = load_private_key(key_path)
    with AuditLog(db, key, masking=masking) as log:
        if clock_override is not None:
            log.append("clock_override", run_id=run_id, payload=clock_override)
        yield DecisionRecorder(log, masking, run_id)


class DurableEmitter:
    """Hand output lines to ``emit`` only once the record each follows is durable (acknowledge after commit).

    ``submit(seq, line)`` queues a line behind record ``seq``; a thread takes
    everything queued, waits once for the last seq (the log's group commit makes
    that one commit), then emits the whole group. Nothing blocks the caller that
    decides, and a reader in a pipe still gets each line as soon as it is
    durable. Lines are emitted in submission order. When the log fails, nothing
    more is emitted and ``submit``/``close`` raise its AuditError.
    """

    def __init__(self, wait_durable: Callable[[int], None], emit: Callable[[list[str]], None], *,
                 max_pending: int = 65_536):
        self._wait_durable = wait_durable
        self._emit = emit
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: list[tuple[int, str]] = []
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="audit-acknowledge", daemon=True)
        self._thread.start()

    def submit(self, seq: int, line: str) -> None:
        with self._cond:
            while len(self._pending) >= self._max_pending and self._error is None:
                self._cond.wait(0.5)  # back-pressure: the log is behind
            if self._error is not None:
                raise self._error
            self._pending.append((seq, line))
            self._cond.notify_all()

    def close(self) -> None:
        """Emit what is queued once durable, stop the thread; raise the log's error if it failed."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(0.5)
                if not self._pending:
                    return
                group, self._pending = self._pending, []
                self._cond.notify_all()
            try:
                self._wait_durable(group[-1][0])
                self._emit([line for _, line in group])
            except BaseException as err:  # kept and raised in the caller's thread
                with self._cond:
                    self._error = err
                    self._cond.notify_all()
                return
