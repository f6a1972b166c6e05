"""Record engine decisions as ``decision`` audit events (used by ``eval --audit``).

Kept apart from the writer so the engine need not know the audit tables: it
hands over a request and a Decision, and this module shapes the payload as
docs/audit-events.md fixes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import AuditError
from .keys import load_private_key
from .log import AuditLog
from .masking import NO_MASKING, Masking


def _as_json(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
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
    shown = masking.apply(payload).get("request")
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


@contextmanager
def record_decisions(
    db: str | os.PathLike[str], key_path: str | os.PathLike[str], *, masking: Masking = NO_MASKING,
    run_id: str | None = None, clock_override: dict[str, Any] | None = None,
) -> Iterator[Callable[[Any, Any], int]]:
    """Open the log and yield ``record(request, decision) -> seq``; closes (and signs) on exit.

    ``clock_override`` (the payload of a ``clock_override`` event) is recorded first
    when the decisions are made as of a time other than now.
    """
    key = load_private_key(key_path)
    with AuditLog(db, key, masking=masking) as log:
        if clock_override is not None:
            log.append("clock_override", run_id=run_id, payload=clock_override)

        def record(request: Any, decision: Any) -> int:
            try:
                return log.append("decision", run_id=run_id, **decision_event(request, decision, masking=masking))
            except AuditError:
                if "lone surrogate" not in str(sys.exc_info()[1]):
                    raise
            # Not valid Unicode (a JSON "\\ud800" escape): keep the record, with such strings
            # written as the text \ud800, rather than lose the decision or stop the batch.
            from ..engine import escape_surrogates

            safe = decision_event(escape_surrogates(_as_json(request)), escape_surrogates(_as_json(decision)),
                                  masking=masking)
            return log.append("decision", run_id=run_id, **safe)

        yield record
