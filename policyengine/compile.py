"""Compile a checked ``PolicySet`` into an immutable evaluator, once, at load time.

Compilation is an ordered tuple of named stages (``STAGES``), each a pure
function of the policy set and what earlier stages produced, so each can be
tested alone. The result, ``CompiledPolicy``, holds:

* conditions turned into Python closures over a ``Ctx`` (see ``conditions.py``);
* rules with their resource-id glob classified once (``*`` free, exact id,
  ``prefix**`` as ``str.startswith``, ``prefix*`` as that plus no later ``/``,
  others via ``globs.glob_regex``), the
  literal first id segment they can match, one fused id+when+unless closure,
  and their ``Reason`` built once;
* an index ``(action, kind) -> Bucket`` whose buckets split rules by role, by
  agent and "any", so a decision only looks at rules that can apply to it;
* gates with the actions their condition is limited to, so others are skipped;
* the role closure, the model registry, residency, budget and route plans.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import ast
from .ast import fast_constructor
from .conditions import Ctx, Pred, _literal_value, _true, action_guard, compile_expr
from .decision import Reason, make_reason
from .globs import compile_pattern, pattern_segment, pattern_shape
from .index import CandidateIndex
from .policyset import PolicySet, Scoped
from .routing import RoutePlan, model_attributes, route_plan
from .schema import SchemaSet, compile_schemas, schema_normalisers
from .rule_paths import recorded
from .scoping import effective, file_scopes, guard_for, guarded



# --- compiled declarations ------------------------------------------------------------


def fuse_rule_test(pattern: str, when: Pred | None, unless: Pred | None) -> Pred | None:
    """One closure for "id matches and when holds and unless does not"; None if always true."""
    w = None if when is _true else when
    kind, arg = pattern_shape(pattern)
    if unless is None:
        if kind == "any":
            return w
        if kind == "exact":
            return (lambda c: c.rid == arg) if w is None else (lambda c: c.rid == arg and w(c))
        if kind == "deep":
            return (lambda c: c.rid.startswith(arg)) if w is None else (lambda c: c.rid.startswith(arg) and w(c))
        # The id test and the condition in one closure (not ``general`` calling two): a rule first tested
        # by a request is cold in memory, and every object its test reads costs a cache miss there.
        if kind == "segment":
            size = len(arg)
            if w is None:
                return lambda c: (rid := c.rid) is not None and rid.startswith(arg) and rid.find("/", size) < 0
            return lambda c: ((rid := c.rid) is not None and rid.startswith(arg) and rid.find("/", size) < 0
                              and w(c))
    matcher = compile_pattern(pattern)

    def general(c: Ctx) -> bool:
        if matcher is not None and not matcher(c.rid):
            return False
        if w is not None and not w(c):
            return False
        return unless is None or not unless(c)

    return general


def _cond(ps: PolicySet, scoped: Scoped[Any], expr: ast.Expr | None,
          shared: dict[tuple[int, str], tuple[Mapping[str, ast.Expr], Pred]] | None = None) -> Pred:
    """Compile a declaration's condition with the consts visible in its package and the schemas' normalisation.

    With ``shared``, conditions written alike in packages that see the same consts get one
    closure (many rules repeat a condition such as ``principal.dept == "d1"``). The key is
    the condition's repr, which spells every value with its type (``1``, ``1.0`` and ``true``
    differ, though they are equal in Python) and leaves out where it is written; a closure
    depends only on the condition, the consts and the normalisation, and keeps no state.
    """
    if expr is None:
        return _true
    consts = ps.consts.get(scoped.package, {})
    if shared is None:
        return compile_expr(expr, consts, schema_normalisers(ps))
    key = (id(consts), repr(expr))
    found = shared.get(key)
    if found is not None and found[0] is consts:
        return found[1]
    pred = compile_expr(expr, consts, schema_normalisers(ps))
    shared[key] = (consts, pred)
    return pred


def _reason(scoped: Scoped[Any], message: str, cites: tuple[str, ...], package_cites: Mapping[str, tuple[str, ...]],
            file_names: Mapping[str, str]) -> Reason:
    more = package_cites.get(scoped.package)
    all_cites = tuple(dict.fromkeys((*cites, *more) if more else cites)) if cites or more else ()
    span = scoped.decl.span
    return make_reason(scoped.id, recorded(file_names, span.file), span.line, message, all_cites)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    key: int  # declaration order across the set; also the decision-cache key
    id: str
    effect: str
    principal_kind: str  # any | role | agent
    principal_name: str | None
    actions: tuple[str, ...]
    kind: str
    match_id: Callable[[str | None], bool] | None
    when: Pred
    unless: Pred | None
    reason: Reason
    scoped: Scoped[ast.RuleDecl]
    segment: str | None  # literal first segment of the ids it can match (see pattern_segment)
    test: Pred | None  # scope + id + when + unless fused; None when the rule always matches
    guard: Pred | None = None  # its package scope and ``applies to`` (scoping.py); None: every request
    # (package cites, recorded file names) of its policy set when ``reason`` is built on first use
    names: tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]] | None = None

    def matches(self, c: Ctx) -> bool:
        """Resource id, ``when`` and ``unless`` (the index already matched the rest)."""
        return self.test is None or self.test(c)

    def __getattr__(self, name: str) -> Reason:
        """``reason``, built on first use and kept in its slot (called only while that slot is unset).

        Most rules of a large set never decide a request, and a reason is a quarter
        of what compiling a rule costs in time and memory. Two threads may both build
        it; they build equal reasons, and either is kept.
        """
        names = self.names if name == "reason" else None
        if names is None:
            raise AttributeError(name)
        d = self.scoped.decl
        reason = _reason(self.scoped, d.because or f"{self.effect} rule {self.id} matched", d.cites, *names)
        _set_slot(self, "reason", reason)
        return reason


_set_slot = object.__setattr__

# CompiledRule(...) with these fields given in this order, setting the slots directly (a third of the
# time ``__init__`` takes through ``object.__setattr__``; ast.fast_constructor), ``reason`` left unset
_LAZY_RULE_FIELDS = ("key", "id", "effect", "principal_kind", "principal_name", "actions", "kind", "match_id",
                     "when", "unless", "scoped", "segment", "test", "guard", "names")
_make_rule = fast_constructor(CompiledRule, _LAZY_RULE_FIELDS)
if {f.name for f in fields(CompiledRule)} != {*_LAZY_RULE_FIELDS, "reason"}:
    raise TypeError("CompiledRule's fields changed: update _LAZY_RULE_FIELDS and the call in stage_rules")


@dataclass(frozen=True, slots=True)
class Bucket:
    """Rules of one (action, kind), split by who they are about."""

    any: tuple[CompiledRule, ...] = ()
    by_role: Mapping[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    by_agent: Mapping[str, tuple[CompiledRule, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledGate:
    key: int
    id: str
    name: str
    when: Pred
    role: str
    within_seconds: int | None
    on_timeout: str
    distinct_approver: bool
    reason: Reason
    scoped: Scoped[ast.EscalateDecl]
    actions: frozenset[str] | None  # the only actions it can apply to (None: any)
    guard: Pred | None = None  # its scope, already part of ``when``; kept for explanations


@dataclass(frozen=True, slots=True, eq=False)
class CompiledResidency:
    key: int
    id: str
    when: Pred
    regions: frozenset[str]
    reason_base: Reason
    scoped: Scoped[ast.ResidencyDecl]
    guard: Pred | None = None  # its scope, already part of ``when``; kept for explanations


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    amount: float
    unit: str
    window: str


@dataclass(frozen=True, slots=True, eq=False)
class CompiledBudget:
    key: int
    id: str
    name: str
    scope_kind: str
    scope_value: str
    scope_key: str
    limits: tuple[CompiledLimit, ...]
    warn_at: float | None
    on_exceed: str  # deny | escalate | route
    target: str | None  # role to escalate to, or model to route to
    reason_base: Reason
    scoped: Scoped[ast.BudgetDecl]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRoute:
    key: int
    id: str
    when: Pred
    prefer: tuple[str, ...]  # the candidates in order, from declared cost and latency
    scoped: Scoped[ast.RouteDecl]
    plan: RoutePlan | None = None  # strategy and bounds; the gateway orders again with measured latency


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """Everything ``evaluate`` needs, prepared once; immutable and shared across threads."""

    rules: tuple[CompiledRule, ...]
    index: Mapping[tuple[str, str], Bucket]
    candidates: CandidateIndex  # rules by literal id prefix, (action, kind) and principal (index.py)
    role_closure: Mapping[str, frozenset[str]]
    agent_roles: Mapping[str, frozenset[str]]
    registry: Mapping[str, Mapping[str, Any]]
    gates: tuple[CompiledGate, ...]
    residencies: tuple[CompiledResidency, ...]
    budgets: tuple[CompiledBudget, ...]
    budgets_by_scope: Mapping[tuple[str, str], tuple[CompiledBudget, ...]]
    routes: tuple[CompiledRoute, ...]
    schemas: SchemaSet
    policy_set: PolicySet
    rate_limits: Mapping[str, tuple[ast.RateLimit, ...]] = field(default_factory=dict)  # allow rule id -> limits

    @property
    def masks(self) -> tuple[tuple[str, tuple[str, ...], str], ...]:
        """(root, parts, action) of the rule files' ``mask`` declarations; the audit writer applies them."""
        return self.policy_set.mask_fields


# --- stages ------------------------------------------------------------------------

Acc = Mapping[str, Any]


def stage_roles(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Role closure (from the checker) and each agent's closed, declared roles."""
    closure = {name: frozenset(roles) for name, roles in ps.role_closure.items()}
    for name in ps.roles:
        closure.setdefault(name, frozenset((name,)))
    agents = {name: ps.roles_of(tuple(r.value for r in a.decl.roles)) for name, a in ps.agents.items()}
    return {"role_closure": closure, "agent_roles": agents}


def stage_registry(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Each declared model's attributes, merged into ``resource.*`` at evaluation."""
    return {"registry": {name: model_attributes(m.decl) for name, m in ps.models.items()}}


def stage_rules(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Closures for every rule's conditions, its id matcher and its ``Reason``."""
    compiled = []
    scopes = file_scopes(ps.files)
    shared: dict[tuple[int, str], tuple[Mapping[str, ast.Expr], Pred]] = {}
    names = (ps.package_cites, ps.file_names)
    for key, scoped in enumerate(ps.rules):
        d = scoped.decl
        guard = guard_for(scopes, d)
        when = _cond(ps, scoped, d.when, shared)
        unless = _cond(ps, scoped, d.unless, shared) if d.unless is not None else None
        compiled.append(_make_rule(  # in the order of _LAZY_RULE_FIELDS; the reason is built on first use
            key,
            scoped.id,
            d.effect,
            d.principal.kind,
            d.principal.name.value if d.principal.name else None,
            tuple(a.value for a in d.actions) or ("*",),
            d.resource_kind.value,
            compile_pattern(d.resource_pattern),
            when,
            unless,
            scoped,
            pattern_segment(d.resource_pattern),
            guarded(guard, fuse_rule_test(d.resource_pattern, when, unless)),
            guard,
            names,
        ))
    return {"rules": tuple(compiled)}


def stage_index(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Index rules by (action, kind); ``*`` / ``any`` entries are looked up too.

    Also the candidate index (``index.py``) that decisions use: the same split
    under the literal prefix of each rule's id pattern.
    """
    raw: dict[tuple[str, str], tuple[list, dict, dict]] = {}
    for rule in acc["rules"]:
        kind = "*" if rule.kind in ("*", "any") else rule.kind
        for action in rule.actions:
            action = "*" if action in ("*", "any") else action
            any_list, by_role, by_agent = raw.setdefault((action, kind), ([], {}, {}))
            if rule.principal_kind == "role":
                by_role.setdefault(rule.principal_name, []).append(rule)
            elif rule.principal_kind == "agent":
                by_agent.setdefault(rule.principal_name, []).append(rule)
            else:
                any_list.append(rule)
    index = {
        k: Bucket(tuple(a), {r: tuple(v) for r, v in br.items()}, {n: tuple(v) for n, v in ba.items()})
        for k, (a, br, ba) in raw.items()
    }
    candidates = CandidateIndex(acc["rules"], (r.scoped.decl.resource_pattern for r in acc["rules"]))
    return {"index": index, "candidates": candidates}


def stage_gates(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Escalation gates with their condition, approver role, deadline and action guard."""
    gates = []
    scopes = file_scopes(ps.files)
    for key, scoped in enumerate(ps.escalations):
        d = scoped.decl
        guard = guard_for(scopes, d)
        actions = action_guard(d.when, ps.consts.get(scoped.package, {}))
        in_scope = effective(scopes.get(id(d)), d.applies)[1]
        if in_scope is not None:
            actions = in_scope if actions is None else actions & in_scope
        message = d.because or f"needs approval by role {d.role.value} (escalation {scoped.id})"
        gates.append(CompiledGate(
            key=key, id=scoped.id, name=d.name.value, when=guarded(guard, _cond(ps, scoped, d.when)),
            role=d.role.value, within_seconds=d.within.seconds if d.within else None,
            on_timeout=d.on_timeout, distinct_approver=d.distinct_approver,
            reason=_reason(scoped, message, d.cites, ps.package_cites, ps.file_names), scoped=scoped,
            actions=actions, guard=guard,
        ))
    return {"gates": tuple(gates)}


def stage_residency(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Residency rules with their allowed regions as a set."""
    out = []
    scopes = file_scopes(ps.files)
    for key, scoped in enumerate(ps.residencies):
        d = scoped.decl
        guard = guard_for(scopes, d)
        consts = ps.consts.get(scoped.package, {})
        ok, value = _literal_value(d.regions, consts)
        regions = frozenset(v for v in (value if ok and isinstance(value, tuple) else ()) if isinstance(v, str))
        message = d.because or f"residency {scoped.id} requires a region in {sorted(regions)}"
        out.append(CompiledResidency(
            key=key, id=scoped.id, when=guarded(guard, _cond(ps, scoped, d.when)), regions=regions,
            reason_base=_reason(scoped, message, d.cites, ps.package_cites, ps.file_names), scoped=scoped, guard=guard,
        ))
    return {"residencies": tuple(out)}


def stage_budgets(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Budgets with their ledger scope key, limits and exceed action, indexed by scope."""
    out = []
    by_scope: dict[tuple[str, str], list[CompiledBudget]] = {}
    for key, scoped in enumerate(ps.budgets):
        d = scoped.decl
        exceed = d.on_exceed
        if isinstance(exceed, ast.EscalateAction):
            on_exceed, target = "escalate", exceed.role.value
        elif isinstance(exceed, ast.RouteAction):
            on_exceed, target = "route", exceed.model.value
        else:
            on_exceed, target = "deny", None
        budget = CompiledBudget(
            key=key, id=scoped.id, name=d.name.value, scope_kind=d.scope.kind,
            scope_value=d.scope.value, scope_key=f"{d.scope.kind}:{d.scope.value}",
            limits=tuple(CompiledLimit(l.amount, l.unit, l.window) for l in d.limits),
            warn_at=d.warn_at, on_exceed=on_exceed, target=target,
            reason_base=_reason(scoped, f"budget {scoped.id} exceeded", (), ps.package_cites, ps.file_names),
            scoped=scoped,
        )
        out.append(budget)
        by_scope.setdefault((d.scope.kind, d.scope.value), []).append(budget)
    return {"budgets": tuple(out), "budgets_by_scope": {k: tuple(v) for k, v in by_scope.items()}}


def stage_routes(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Routes with their condition and candidate models in order."""
    out = []
    for key, scoped in enumerate(ps.routes):
        d = scoped.decl
        plan = route_plan(d, tuple(acc["registry"]))
        out.append(CompiledRoute(key=key, id=scoped.id, when=_cond(ps, scoped, d.when),
                                 prefer=plan.order(acc["registry"]), scoped=scoped, plan=plan))
    return {"routes": tuple(out)}


def stage_rate_limits(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """The ``limit`` clauses of allow rules, by rule id (the gateway counts them when the rule allows)."""
    return {"rate_limits": {s.id: s.decl.limits for s in ps.rules if s.decl.limits}}


def stage_schemas(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Request schemas: one validator per action, checked before any rule runs."""
    return {"schemas": compile_schemas(ps)}


Stage = Callable[[PolicySet, Acc], dict[str, Any]]

# The compile pipeline, as data: each stage reads the policy set and the earlier results.
STAGES: tuple[tuple[str, Stage], ...] = (
    ("roles", stage_roles),
    ("registry", stage_registry),
    ("rules", stage_rules),
    ("index", stage_index),
    ("gates", stage_gates),
    ("residency", stage_residency),
    ("budgets", stage_budgets),
    ("routes", stage_routes),
    ("rate_limits", stage_rate_limits),
    ("schemas", stage_schemas),
)


def compile_policy(ps: PolicySet, stages: tuple[tuple[str, Stage], ...] = STAGES) -> CompiledPolicy:
    """Run every stage in order and freeze the result.

    The cyclic garbage collector is paused meanwhile: compiling allocates many
    long-lived objects, and collections would rescan the whole AST repeatedly.
    """
    acc: dict[str, Any] = {}
    paused = gc.isenabled()
    gc.disable()
    try:
        for _name, stage in stages:
            acc.update(stage(ps, acc))
    finally:
        if paused:
            gc.enable()
    return CompiledPolicy(policy_set=ps, **acc)
