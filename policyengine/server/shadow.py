"""Shadow mode for ``policyengine serve --shadow CANDIDATE``: decide every request again under a candidate policy.

The live answer is never changed and never waits for the candidate: the server
hands each decided request here with ``call_soon``, so the candidate decides it
on the event loop while the live record's group commit is in flight (or right
after the answer is sent). When the candidate's effect or route differs, one
``shadow_diff`` audit event records both (``report shadow_diffs`` sums them).
The candidate decides with its own, empty budget ledger: budgets are the live
policy's business, as in ``policyengine replay``. It judges approvers by the live
server's user directory (``--directory``), as the live policy does: without it the
candidate would read only the roles an approval claims, and a change of who may
approve would show as no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..engine import Policy, load_policy


class Shadow:
    """A loaded candidate policy and where its differences go (``record(payload, actor) -> None``)."""

    def __init__(self, candidate: Policy) -> None:
        self.candidate = candidate
        self.decided = 0
        self.differed = 0
        self.failed = 0

    @classmethod
    def load(cls, paths: Sequence[str]) -> Shadow:
        return cls(load_policy(list(paths)))

    def compare(self, request: Any, live: Mapping[str, Any], seq: int,
                directory: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any] | None:
        """The ``shadow_diff`` payload when the candidate decides ``request`` otherwise than ``live``, else None."""
        self.decided += 1
        d = self.candidate.evaluate(request, directory=directory)
        if d.effect == live.get("effect") and d.route == live.get("route"):
            return None
        self.differed += 1
        live_rules = [r.get("rule") for r in live.get("reasons", ()) if isinstance(r, Mapping)]
        shadow_rules = [r.rule for r in d.reasons]
        fired = [r for r in shadow_rules if r not in live_rules] or [r for r in live_rules if r not in shadow_rules]
        old = str(live.get("effect"))
        transition = (f"{old} -> {d.effect}" if old != d.effect
                      else f"{old} via {live.get('route') or '-'} -> {d.route or '-'}")
        return {
            "live_seq": seq,
            "transition": transition,
            "rules": list(dict.fromkeys(r for r in fired if r)) or ["<same rules>"],
            "live": {"effect": old, "route": live.get("route"), "rules": live_rules,
                     "policy_hash": live.get("policy_hash")},
            "candidate": {"effect": d.effect, "route": d.route, "rules": shadow_rules,
                          "policy_hash": self.candidate.policy_hash},
            "model_version": live.get("model_version"),
            "request": request,
        }

    def check(self, request: Any, live: Mapping[str, Any], seq: int,
              record: Callable[[dict[str, Any], str | None], object],
              directory: Mapping[str, Sequence[str]] | None = None) -> None:
        """Compare and record; never raises (the live answer is not the shadow's to break)."""
        try:
            payload = self.compare(request, live, seq, directory)
            if payload is not None:
                principal = request.get("principal") if isinstance(request, Mapping) else None
                actor = principal.get("id") if isinstance(principal, Mapping) else None
                record(payload, actor if isinstance(actor, str) else None)
        except Exception:  # noqa: BLE001 - counted; a failing log shows on the live path itself
            self.failed += 1


__all__ = ["Shadow"]
