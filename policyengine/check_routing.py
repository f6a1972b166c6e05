"""Checks of the traffic clauses: route strategies and bounds, and rate limits.

A stage of ``check.py``'s checker (it reports through it). Unknown models in a
route's ``prefer``/``among`` list are reported with the other references; here:

* ``route-bound``: a latency bound that is not above 0, a cost bound below 0;
* ``route-impossible``: no candidate is within the bounds by its declared cost
  and latency, so the route could never pick a model;
* ``route-unknown-cost`` / ``route-unknown-latency`` (warnings): a candidate
  the strategy or a bound cannot place because it declares no cost (in the
  bound's currency) or latency: it fails the bound and sorts last;
* ``limit-on-deny``: a ``limit`` clause on a deny rule (only allowed calls are counted);
* ``duplicate-limit`` (warning): the same unit, window and scope limited twice in one rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ast
from .routing import model_attributes, route_plan

if TYPE_CHECKING:
    from .check import _Checker


def check_traffic(checker: _Checker) -> None:
    registry: dict[str, dict[str, Any]] = {name: model_attributes(m.decl) for name, m in checker.models.items()}
    for scoped in checker.each(ast.RouteDecl):
        _route(checker, scoped.decl, registry)
    for scoped in checker.each(ast.RuleDecl):
        _limits(checker, scoped.decl)


def _route(checker: _Checker, decl: ast.RouteDecl, registry: dict[str, dict[str, Any]]) -> None:
    name = decl.name.value
    bad = False
    if decl.max_latency_ms is not None and decl.max_latency_ms <= 0:
        checker.report("route-bound", f"route '{name}': a latency bound must be above 0 ms",
                       decl.latency_span or decl.span, help="for example: within latency 500 ms")
        bad = True
    if decl.max_cost is not None and decl.max_cost.amount < 0:
        checker.report("route-bound", f"route '{name}': a cost bound cannot be below 0", decl.max_cost.span)
        bad = True
    plan = route_plan(decl, tuple(registry))
    known = [m for m in plan.pool if m in registry]
    if len(known) < len(plan.pool):
        return  # an unknown model is reported with the other references
    wants_cost = decl.max_cost is not None or plan.strategy == "cheapest"
    wants_latency = decl.max_latency_ms is not None or plan.strategy == "fastest"
    for model in known:
        span = _model_span(decl, model)
        if wants_cost and plan.cost(model, registry) is None:
            currency = f" in {plan.currency}" if plan.currency else ""
            checker.warn("route-unknown-cost", f"route '{name}': model '{model}' declares no cost{currency}, "
                                               "so it fails a cost bound and is tried last by 'cheapest'", span,
                         help=f"declare it: model {model} cost 0.20 {plan.currency or 'USD'} per 1M tokens")
        if wants_latency and plan.latency(model, registry, {}) is None:
            checker.warn("route-unknown-latency", f"route '{name}': model '{model}' declares no latency, so it "
                                                  "fails a latency bound and is tried last by 'fastest' "
                                                  "until the gateway has measured it", span,
                         help=f"declare it: model {model} latency 200 ms")
    if not bad and known and not plan.order(registry):
        checker.report("route-impossible", f"route '{name}': no candidate model is {_bounds(decl)} "
                                           "by its declared cost and latency, so the route can never pick one",
                       decl.latency_span or (decl.max_cost.span if decl.max_cost else decl.span),
                       help=_closest(plan, registry))


def _bounds(decl: ast.RouteDecl) -> str:
    parts = []
    if decl.max_latency_ms is not None:
        parts.append(f"within latency {decl.max_latency_ms:g} ms")
    if decl.max_cost is not None:
        parts.append(f"under cost {decl.max_cost.amount:g} {decl.max_cost.currency} per 1M tokens")
    return " and ".join(parts)


def _closest(plan: Any, registry: dict[str, dict[str, Any]]) -> str | None:
    offers = []
    for model in plan.pool:
        latency, cost = plan.latency(model, registry, {}), plan.cost(model, registry)
        what = [f"{latency:g} ms" if latency is not None else "no latency",
                f"{cost:g} {registry[model].get('currency', '')} per 1M" if cost is not None else "no cost"]
        offers.append(f"{model} ({', '.join(what)})")
    return ("the candidates declare: " + "; ".join(offers[:5])) if offers else None


def _model_span(decl: ast.RouteDecl, model: str) -> Any:
    for name in decl.prefer:
        if name.value == model:
            return name.span
    return decl.strategy.span if decl.strategy else decl.span


def _limits(checker: _Checker, rule: ast.RuleDecl) -> None:
    seen: set[tuple[str, str, str]] = set()
    for limit in rule.limits:
        if rule.effect == "deny":
            checker.report("limit-on-deny", f"rule '{rule.name.value}' denies, so its limit counts nothing",
                           limit.span, help="put the limit on the allow rule that lets the calls through")
        key = (limit.unit, limit.window, limit.scope)
        if key in seen:
            checker.warn("duplicate-limit", f"rule '{rule.name.value}' limits {limit.unit} per {limit.window} "
                                            f"for {limit.scope} twice; the lower one holds", limit.span)
        seen.add(key)
