"""Rate limits and routes of the gateway: what a call counts against, and which models a route tries.

Rate limits come from two places, counted in one all-or-nothing step in the
store's rate limiter (in-process, or Redis): the keys file's per-minute limits
of the key and its team, and the ``limit`` clauses of every allow rule that
allowed the call (``limit 60 requests per minute [for key|team|model|principal]``;
counted once per call, for the first allowed model; a principal by its canonical identity, so keys that
spell one person's id differently share her counter). A refused call counts
nothing, and its ``Retry-After`` is the end of the refusing window.

A call whose ``model`` names a ``route`` (its name, or its id ``package.name``)
instead of a declared model is routed: the route's candidates, filtered by its
bounds and ordered by its strategy from the declared cost and latency, the
latency measured here (a moving average of upstream latency) taking the
declared one's place once known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..compile import CompiledPolicy, CompiledRoute
from ..identity import canonical_identity
from ..store.ratelimit import RateLimiter
from .config import VirtualKey

WINDOW_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit a call counts against."""

    name: str  # the limiter's key
    unit: str  # requests | tokens
    limit: float
    per: float  # seconds
    who: str  # for the message: "key", "team accounts-payable", "rule p.r (per model small)"
    rule: str  # what the 429 names


def key_counters(key: VirtualKey, teams: Mapping[str, Any]) -> list[Counter]:
    """The keys file's per-minute limits of ``key`` and its team."""
    out = []
    sources = [(f"key:{key.key_id}", key.limits, "key")]
    if key.team is not None and key.team in teams:
        sources.append((f"team:{key.team}", teams[key.team], f"team {key.team}"))
    for name, limits, who in sources:
        for unit, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute)):
            if limit is not None:
                out.append(Counter(f"{name}:{unit}", unit, limit, 60.0, who, f"<rate-limit:{who}>"))
    return out


def rule_counters(compiled: CompiledPolicy, rules: Sequence[str], key: VirtualKey, model: str) -> list[Counter]:
    """The ``limit`` clauses of the allow rules ``rules`` (a decision's reasons) for a call to ``model``."""
    out = []
    for rule in rules:
        for limit in compiled.rate_limits.get(rule, ()):
            value = {"key": key.key_id, "team": key.team, "model": model,
                     "principal": key.principal.get("id")}[limit.scope]
            if limit.scope == "principal":  # one person, one counter: "Dana " and "dana" are one identity
                value = canonical_identity(value, "principal.id")
            if value is None:  # a key without a team: its team limit counts for the key alone
                value = f"key:{key.key_id}"
            out.append(Counter(f"rule:{rule}:{limit.scope}:{value}:{limit.unit}:{limit.window}", limit.unit,
                               limit.amount, WINDOW_SECONDS[limit.window], f"rule {rule} (per {limit.scope} {value})",
                               rule))
    return out


class Refused(Exception):
    """A counter had no room: the call is rate-limited until ``retry_after`` seconds."""

    def __init__(self, counter: Counter, retry_after: int) -> None:
        super().__init__(f"rate limit of {counter.who}: {counter.limit:g} {counter.unit} per "
                         f"{_window_word(counter.per)}")
        self.counter = counter
        self.retry_after = retry_after


def _window_word(per: float) -> str:
    return {v: k for k, v in WINDOW_SECONDS.items()}.get(per, f"{per:g} s")


Taken = tuple[Counter, float, float]
"""A counter a call counted against, the amount, and when (epoch seconds: the window it was counted in)."""


def acquire(limiter: RateLimiter, counters: Sequence[Counter], tokens: float) -> list[Taken]:
    """Count the call against every counter, or against none (raise ``Refused``); what was taken."""
    taken: list[Taken] = []
    at = time.time()
    for counter in counters:
        amount = 1.0 if counter.unit == "requests" else tokens
        if limiter.acquire(counter.name, amount, limit=counter.limit, per=counter.per, now=at):
            taken.append((counter, amount, at))
            continue
        give_back(limiter, taken)
        wait = counter.per - at % counter.per  # fixed windows, aligned on the epoch
        raise Refused(counter, max(1, math.ceil(wait)))
    return taken


def give_back(limiter: RateLimiter, taken: Sequence[Taken]) -> None:
    """Uncount what was taken, in the window it was counted in."""
    for counter, amount, at in taken:
        limiter.acquire(counter.name, -amount, limit=1e18, per=counter.per, now=at)


def correct_tokens(limiter: RateLimiter, taken: Sequence[Taken], actual: float) -> None:
    """Replace the tokens estimate counted by the actual usage. Usage over the estimate counts in the window
    now; usage under it is given back only while the window that counted the estimate lasts (the next window
    never counted it: giving it back there would let the key spend that much over its limit)."""
    now = time.time()
    for counter, amount, at in taken:
        if counter.unit != "tokens" or actual == amount:
            continue
        if actual > amount:
            limiter.acquire(counter.name, actual - amount, limit=1e18, per=counter.per, now=now)
        elif int(now // counter.per) == int(at // counter.per):
            limiter.acquire(counter.name, actual - amount, limit=1e18, per=counter.per, now=at)


def find_route(compiled: CompiledPolicy, name: str) -> CompiledRoute | None:
    """The route called ``name`` (its id, or its bare name when only one route has it)."""
    exact = [r for r in compiled.routes if r.id == name]
    if exact:
        return exact[0]
    bare = [r for r in compiled.routes if r.scoped.decl.name.value == name]
    return bare[0] if len(bare) == 1 else None


def route_models(route: CompiledRoute, compiled: CompiledPolicy, measured: Mapping[str, float]) -> tuple[str, ...]:
    """The route's candidates in the order to try them, with what was measured."""
    if route.plan is None:
        return route.prefer
    return route.plan.order(compiled.registry, measured)
