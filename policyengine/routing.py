"""Routing strategies: which candidate models a route tries, and in which order.

A route's plan is its pool of candidates (``prefer a, b`` or ``among a, b``;
every declared model when a strategy names none), an optional strategy
(``cheapest``: by the declared cost per 1M tokens; ``fastest``: by latency) and
optional bounds (``within latency N ms``, ``under cost M CUR per 1M tokens``).
Latency is the measured one where the caller knows it (the gateway's moving
average of upstream latency), else the declared one. A model whose value a
bound or strategy needs is unknown fails the bound (fail closed) and sorts
last. Ties keep the pool's order. Pure: no I/O, the same answer for the same
inputs, so compile uses it with declared values only and the gateway again with
what it measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import ast

__all__ = ["RoutePlan", "LatencyMeter", "model_attributes", "route_plan"]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    pool: tuple[str, ...]
    strategy: str | None = None  # "cheapest" | "fastest"
    max_latency_ms: float | None = None
    max_cost: float | None = None  # per 1M tokens, in ``currency``
    currency: str | None = None

    def latency(self, model: str, registry: Mapping[str, Mapping[str, Any]],
                measured: Mapping[str, float]) -> float | None:
        if model in measured:
            return measured[model]
        value = (registry.get(model) or {}).get("latency_ms")
        return float(value) if value is not None else None

    def cost(self, model: str, registry: Mapping[str, Mapping[str, Any]]) -> float | None:
        entry = registry.get(model) or {}
        value = entry.get("cost_per_1m_tokens")
        if value is None or (self.currency is not None and entry.get("currency") != self.currency):
            return None  # no price, or one in another currency: not comparable
        return float(value)

    def admits(self, model: str, registry: Mapping[str, Mapping[str, Any]], measured: Mapping[str, float]) -> bool:
        """Whether ``model`` is within the plan's bounds (an unknown value is not)."""
        if self.max_latency_ms is not None:
            latency = self.latency(model, registry, measured)
            if latency is None or latency > self.max_latency_ms:
                return False
        if self.max_cost is not None:
            cost = self.cost(model, registry)
            if cost is None or cost > self.max_cost:
                return False
        return True

    def order(self, registry: Mapping[str, Mapping[str, Any]],
              measured: Mapping[str, float] | None = None) -> tuple[str, ...]:
        """The candidates within the bounds, in the order the strategy gives (else the pool's)."""
        measured = measured or {}
        pool = [m for m in self.pool if self.admits(m, registry, measured)]
        if self.strategy == "cheapest":
            pool.sort(key=lambda m: _or_last(self.cost(m, registry)))
        elif self.strategy == "fastest":
            pool.sort(key=lambda m: _or_last(self.latency(m, registry, measured)))
        return tuple(pool)


def route_plan(decl: ast.RouteDecl, declared: tuple[str, ...]) -> RoutePlan:
    """The plan of a route declaration; ``declared``: every model, the pool of a strategy without ``among``."""
    pool = tuple(dict.fromkeys(n.value for n in decl.prefer)) if decl.prefer else declared
    return RoutePlan(pool, decl.strategy.value if decl.strategy else None, decl.max_latency_ms,
                     decl.max_cost.amount if decl.max_cost else None,
                     decl.max_cost.currency if decl.max_cost else None)


def _or_last(value: float | None) -> float:
    return math.inf if value is None else value


class LatencyMeter:
    """Measured upstream latency per model: an exponentially weighted moving average (in ms).

    One per gateway process, updated by the event loop's thread only.
    """

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.values: dict[str, float] = {}

    def record(self, model: str, latency_ms: float) -> None:
        old = self.values.get(model)
        self.values[model] = latency_ms if old is None else old + self.weight * (latency_ms - old)


def model_attributes(decl: ast.ModelDecl) -> dict[str, Any]:
    """Registry attributes merged into ``resource.*`` for a declared model."""
    attrs: dict[str, Any] = {"name": decl.name.value}
    if decl.provider is not None:
        attrs["provider"] = decl.provider
    if decl.region is not None:
        attrs["region"] = decl.region
    if decl.hosting is not None:
        attrs["hosting"] = decl.hosting
    if decl.cost_per_1m_tokens is not None:
        attrs["cost_per_1m_tokens"] = decl.cost_per_1m_tokens.amount
        attrs["cost"] = decl.cost_per_1m_tokens.amount
        attrs["currency"] = decl.cost_per_1m_tokens.currency
    if decl.latency_ms is not None:
        attrs["latency_ms"] = decl.latency_ms
        attrs["latency"] = decl.latency_ms
    return attrs
