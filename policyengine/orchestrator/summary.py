"""The numbers printed after a batch: counts by result, spend, and step latency."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .runner import RunResult

DENIED = frozenset({"denied", "rejected", "expired"})


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What a batch did. ``denied`` counts runs ended by a deny, a rejection or an expired approval.

    Counts are of the items' runs as they stand; ``already_run`` of them had a
    run from an earlier run of the input and were not run again, ``resumed`` were
    unfinished and driven on from their journal.
    """

    workflow: str
    items: int
    auto_resolved: int
    escalated: int
    denied: int
    failed: int
    completed: int
    tokens: int
    cost_usd: float
    p50_step_ms: float
    p95_step_ms: float
    outcomes: Mapping[str, int]
    models: Mapping[str, int]
    fallbacks: int
    already_run: int = 0
    resumed: int = 0

    @classmethod
    def of(cls, workflow: str, results: Iterable[RunResult]) -> BatchSummary:
        rs = list(results)
        steps = [ms for r in rs for ms in r.step_ms]
        return cls(
            workflow=workflow, items=len(rs),
            auto_resolved=sum(r.outcome == "auto_resolved" for r in rs),
            escalated=sum(r.status == "waiting_approval" for r in rs),
            denied=sum(r.status in DENIED for r in rs),
            failed=sum(r.status == "failed" for r in rs),
            completed=sum(r.status == "completed" for r in rs),
            tokens=sum(r.tokens for r in rs), cost_usd=round(sum(r.cost_usd for r in rs), 6),
            p50_step_ms=round(percentile(steps, 0.50), 3), p95_step_ms=round(percentile(steps, 0.95), 3),
            outcomes=MappingProxyType(dict(Counter(r.outcome or r.status for r in rs).most_common())),
            models=MappingProxyType(dict(Counter(m for r in rs for m in r.models).most_common())),
            fallbacks=sum(r.fallbacks for r in rs),
            already_run=sum(r.earlier in ("done", "waiting", "held") for r in rs),
            resumed=sum(r.earlier == "resumed" for r in rs),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["outcomes"], d["models"] = dict(self.outcomes), dict(self.models)
        return d
