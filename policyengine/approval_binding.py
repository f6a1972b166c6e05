"""Approvals carried inside a request count only for that request, and only for a while.

An approval entry (``{"gate", "approver", "roles", "ts", "run_id" | "request_hash"}``)
is a claim that a person approved *this* request. Without a binding it could be
copied into any other request, or replayed years later. So every entry must:

* say when it was given (``ts``, ISO 8601), no more than ``APPROVAL_VALID_FOR``
  before the decision time and no more than ``CLOCK_SKEW`` after it;
* name what it approves: ``run_id`` equal to the request's ``context.run_id``
  (the orchestrator's runs), or ``request_hash`` equal to ``request_hash(request)``
  (SHA-256 of the request's RFC 8785 JSON without its ``approvals``).

A request carrying an entry that fails either check is denied as malformed, with
one error per entry naming why (stale, in the future, another run, another
request, unbound); a gate is never opened by it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

APPROVAL_VALID_FOR = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)


def request_hash(request: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the request's canonical JSON without ``approvals`` (what an approval binds to)."""
    from .audit.canonical import canonical_bytes  # RFC 8785, the audit log's canonical form

    body = {k: v for k, v in request.items() if k != "approvals"}
    return "sha256:" + hashlib.sha256(canonical_bytes(body)).hexdigest()


def _when(value: Any) -> datetime | None:
    if value.__class__ is not str:
        return None
    try:
        t = datetime.fromisoformat(value)
        return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def binding_errors(request: Mapping[str, Any], now: datetime | None) -> list[str]:
    """Why approval entries of ``request`` do not count for it at ``now`` (empty: all bound and fresh)."""
    raw = request.get("approvals")
    if raw.__class__ is not list and raw.__class__ is not tuple:
        return []  # the shape is checked (and reported) with the rest of the request
    now = (now if now.tzinfo else now.replace(tzinfo=UTC)) if now is not None else datetime.now(UTC)
    context = request.get("context")
    run_id = context.get("run_id") if isinstance(context, Mapping) else None
    errors: list[str] = []
    own_hash: str | None = None
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            continue
        where = f"approvals[{i}]"
        given = _when(entry.get("ts"))
        if given is None:
            errors.append(f"{where}.ts: missing or not an ISO 8601 time; an approval must say when it was given")
        elif given < now - APPROVAL_VALID_FOR:
            errors.append(f"{where}: stale: given at {given.isoformat()}, more than {APPROVAL_VALID_FOR.days} days "
                          f"before the decision time {now.isoformat()}")
        elif given > now + CLOCK_SKEW:
            errors.append(f"{where}: given at {given.isoformat()}, after the decision time {now.isoformat()}")
        bound_run, bound_hash = entry.get("run_id"), entry.get("request_hash")
        if bound_run is None and bound_hash is None:
            errors.append(f"{where}: not bound to this request: give run_id (the request's context.run_id) "
                          f"or request_hash")
            continue
        if bound_run is not None and (run_id is None or bound_run != run_id):
            errors.append(f"{where}: given for run {str(bound_run)[:80]!r}, not this request's run "
                          f"{str(run_id)[:80] if run_id is not None else '(none)'}")
        if bound_hash is not None:
            if own_hash is None:
                try:
                    own_hash = request_hash(request)
                except Exception:  # noqa: BLE001 - a request that has no canonical form matches no hash
                    own_hash = ""
            if bound_hash != own_hash:
                errors.append(f"{where}: request_hash does not match this request (it approves another one)")
    return errors
