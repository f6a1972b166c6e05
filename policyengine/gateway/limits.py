"""Admission before an upstream call: budget reservations (rate limits: ``policyengine.store.ratelimit``).

Budgets cannot be overspent because every call *reserves* its estimate in the
ledger before it goes upstream, then settles the real usage or releases the hold
when the call fails. The helpers are the store's (``policyengine.store.holds``),
shared with the orchestrator; this module names them for the gateway.
"""

from __future__ import annotations

from ..store.holds import Hold, MemoryReservingLedger, release, reserve, settle

__all__ = ["Hold", "MemoryReservingLedger", "release", "reserve", "settle"]
