"""``--hold-for-approval``: a call that needs an approval waits for it (bounded) instead of being answered 403.

The held call is listed at ``GET /v1/approvals`` for the keys whose principal
holds the gate's role, and approved (or rejected) by one of them with ``POST
/v1/approvals`` ``{"id", "decision": "approve"|"reject"}``. The approval is an
ordinary approval entry of the engine (``approval_binding``): bound to the
held request by its hash, stamped with the time, and decided with the
approver's roles from the keys file as the directory, so the policy decides
whether it opens the gate (role, ``require distinct approver``) exactly as for
any request; an approval that does not open it is refused to the approver and
the call keeps waiting. The wait ends at the first of: the approval, a
rejection, ``hold_for_approval`` seconds, the gate's own deadline. Held calls
live in this process only.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..approval_binding import request_hash


@dataclass
class HeldCall:
    id: str
    gate: str
    role: str
    model: str
    request: dict[str, Any]
    requester: str
    since: float = field(default_factory=time.time)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    approved: dict[str, Any] | None = None  # the request with its approval, once approved
    directory: dict[str, list[str]] | None = None
    rejected_by: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "gate": self.gate, "role": self.role, "model": self.model,
                "requester": self.requester, "waiting_s": round(time.time() - self.since, 1),
                "request_hash": request_hash(self.request)}


class ApprovalDesk:
    """The calls held in this process, by id."""

    def __init__(self) -> None:
        self.held: dict[str, HeldCall] = {}

    def open(self, gate: str, role: str, model: str, request: dict[str, Any]) -> HeldCall:
        call = HeldCall(secrets.token_hex(8), gate, role, model, request, str(request["principal"].get("id")))
        self.held[call.id] = call
        return call

    def close(self, call: HeldCall) -> None:
        self.held.pop(call.id, None)

    def visible_to(self, roles: set[str]) -> list[dict[str, Any]]:
        return [c.summary() for c in self.held.values() if c.role in roles]

    @staticmethod
    def approval(call: HeldCall, approver: str) -> dict[str, Any]:
        """The held request with ``approver``'s approval of its gate, bound to it by hash."""
        entry = {"gate": call.gate, "approver": approver, "ts": datetime.now(UTC).isoformat(),
                 "request_hash": request_hash(call.request)}
        return {**call.request, "approvals": [entry]}


async def wait(call: HeldCall, seconds: float) -> bool:
    """Whether the call was decided (approved or rejected) within ``seconds``."""
    try:
        await asyncio.wait_for(call.done.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
