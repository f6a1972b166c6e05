"""Parse the traffic clauses: routing strategies and bounds, and rate limits on allow rules.

``route R prefer cheapest|fastest [among a, b]``, ``within latency 500 ms``,
``under cost 2 USD per 1M tokens``, and a rule's ``limit 60 requests per minute
[for key|team|model|principal]``. The methods are mixed into ``syntax.Builder``
(one method per grammar alias, as everywhere in the builder); what they build
is checked by ``check_routing`` and applied by ``routing`` and the gateway.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lark import Token, Transformer, v_args

from . import ast
from .syntax_tokens import number_value, syntax_error

RATE_UNITS = {"request": "requests", "requests": "requests", "token": "tokens", "tokens": "tokens"}
RATE_WINDOWS = {"second": "second", "sec": "second", "s": "second", "minute": "minute", "min": "minute",
                "hour": "hour", "h": "hour", "day": "day", "d": "day"}
RATE_SCOPES = ("key", "team", "model", "principal")
STRATEGIES = ("cheapest", "fastest")


@v_args(inline=True)
class RoutingSyntax(Transformer):
    """Builder methods for routes and rate limits (they use the builder's span and clause helpers)."""

    def route_decl(self, kw: Token, name_tok: Token, *clauses: Any) -> ast.RouteDecl:
        name = self._name(name_tok)  # type: ignore[attr-defined]
        found = self._clauses("route", name, clauses)  # type: ignore[attr-defined]
        prefer = self._require(found, "prefer", "route", name,  # type: ignore[attr-defined]
                               "prefer MODEL, ... (or prefer cheapest|fastest [among MODEL, ...])")
        strategy: ast.Name | None = None
        if isinstance(prefer, _Strategy):
            strategy, prefer = prefer.name, prefer.among
        latency, latency_span = found.get("latency", (None, None))
        return ast.RouteDecl(name, found.get("when"), prefer, span=self._decl_span(kw, name, clauses),  # type: ignore[attr-defined]
                             strategy=strategy, max_latency_ms=latency, max_cost=found.get("cost"),
                             latency_span=latency_span)

    def c_prefer(self, kw: Token, names: tuple[ast.Name, ...]) -> Any:
        return self._clause("prefer", names, kw, names[-1].span)  # type: ignore[attr-defined]

    def c_prefer_strategy(self, kw: Token, strategy: Token, among: Token | None,
                          names: tuple[ast.Name, ...] | None) -> Any:
        chosen = _Strategy(ast.Name(strategy.value, span=self._span(strategy)), names or ())  # type: ignore[attr-defined]
        return self._clause("prefer", chosen, kw, names[-1].span if names else strategy)  # type: ignore[attr-defined]

    def c_within_latency(self, kw: Token, latency: Token, value: Token, unit: Token) -> Any:

        scale = {"ms": 1, "s": 1000}.get(unit.value)
        if scale is None:
            raise syntax_error(f"latency is in 'ms' or 's', not '{unit}'", self._span(unit),  # type: ignore[attr-defined]
                          help="for example: within latency 500 ms")
        span = self._cover(self._span(value), self._span(unit))  # type: ignore[attr-defined]
        return self._clause("latency", (float(number_value(value, self._path)) * scale, span), kw, unit)  # type: ignore[attr-defined]

    def c_under_cost(self, kw: Token, cost: Token, money: ast.Money, per: Token, count: Token, scale: Token,
                     unit: Token | None) -> Any:
        key, value, _, end = self.c_cost(cost, money, per, count, scale, unit)  # type: ignore[attr-defined]
        return self._clause("cost", value, kw, end)  # type: ignore[attr-defined]

    def c_rate_limit(self, kw: Token, amount: Token, unit: Token, per: Token, window: Token,
                     for_: Token | None, scope: Token | None) -> Any:

        if unit.value not in RATE_UNITS:
            raise syntax_error(f"a rate limit counts 'requests' or 'tokens', not '{unit}'", self._span(unit),  # type: ignore[attr-defined]
                          help="for example: limit 60 requests per minute")
        if window.value not in RATE_WINDOWS:
            raise syntax_error(f"a rate limit is per second, minute, hour or day, not '{window}'",
                          self._span(window))  # type: ignore[attr-defined]
        if scope is not None and scope.value not in RATE_SCOPES:
            raise syntax_error(f"a rate limit is counted for key, team, model or principal, not '{scope}'",
                          self._span(scope), help="for example: limit 100000 tokens per minute for team")  # type: ignore[attr-defined]
        number = number_value(amount, self._path)  # type: ignore[attr-defined]
        end = scope if scope is not None else window
        if number <= 0:
            raise syntax_error("a rate limit must be above 0", self._span(amount),  # type: ignore[attr-defined]
                          help="to refuse every call, write a deny rule")
        limit = ast.RateLimit(float(number), RATE_UNITS[unit.value], RATE_WINDOWS[window.value],  # type: ignore[arg-type]
                              scope.value if scope is not None else "key",  # type: ignore[arg-type]
                              span=self._cover(self._span(kw), self._span(end)))  # type: ignore[attr-defined]
        return self._clause("limit", limit, kw, end)  # type: ignore[attr-defined]


class _Strategy(NamedTuple):
    """``prefer STRATEGY [among ...]`` on its way from its clause to the route."""

    name: ast.Name
    among: tuple[ast.Name, ...]
