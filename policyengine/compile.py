"""Compile a checked ``PolicySet`` into an immutable evaluator, once, at load time.

Compilation is an ordered tuple of named stages (``STAGES``), each a pure
function of the policy set and what earlier stages produced, so each can be
tested alone. The result, ``CompiledPolicy``, holds:

* expressions turned into Python closures over a ``Ctx`` (the request view),
  with constants folded and list membership turned into set lookups;
* rules with precompiled resource-id matchers (exact-id fast path, ``*`` free,
  other globs via ``fnmatch.translate``) and their ``Reason`` built once;
* an index ``(action, kind) -> Bucket`` whose buckets split rules by role, by
  agent and "any", so a decision only looks at rules that can apply to it;
* the role closure, the model registry, gates, residency, budget and route plans.

Semantics of comparisons: a missing attribute (or JSON ``null``) makes every
comparison false, and so does a type mismatch such as ``"a" < 3``; nothing raises.
"""

from __future__ import annotations

import fnmatch
import gc
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import ast
from .decision import Reason
from .policyset import PolicySet, Scoped


class Ctx:
    """The request as compiled closures read it (built by ``evaluate``; internal)."""

    __slots__ = (
        "pid", "ptype", "roles", "pattrs", "action", "kind", "rid", "rattrs", "reg",
        "data", "context", "approvals",
    )

    def __init__(self, pid: str, ptype: str, roles: frozenset[str], pattrs: dict, action: str,
                 kind: str, rid: str | None, rattrs: dict, reg: dict | None, data: dict,
                 context: dict, approvals: tuple) -> None:
        self.pid = pid
        self.ptype = ptype
        self.roles = roles
        self.pattrs = pattrs
        self.action = action
        self.kind = kind
        self.rid = rid
        self.rattrs = rattrs
        self.reg = reg
        self.data = data
        self.context = context
        self.approvals = approvals

    def with_resource(self, rid: str, reg: dict | None) -> Ctx:
        """The same request about another resource id (routing candidates, reroutes)."""
        return Ctx(self.pid, self.ptype, self.roles, self.pattrs, self.action, self.kind, rid,
                   self.rattrs, reg, self.data, self.context, self.approvals)


Getter = Callable[[Ctx], Any]
Pred = Callable[[Ctx], bool]


def _true(_: Ctx) -> bool:
    return True


# --- expressions -------------------------------------------------------------------


def _dig(value: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _dict_getter(slot: str, parts: tuple[str, ...]) -> Getter:
    if not parts:
        return lambda c: getattr(c, slot)
    if len(parts) == 1:
        (key,) = parts
        if slot == "context":
            return lambda c: c.context.get(key)
        if slot == "data":
            return lambda c: c.data.get(key)
        return lambda c: getattr(c, slot).get(key)
    first, rest = parts[0], parts[1:]
    return lambda c: _dig(getattr(c, slot).get(first), rest)


def _path_getter(path: ast.Path) -> Getter:
    """A closure reading one request attribute; ``None`` means missing."""
    root, parts = path.root, path.parts
    if root == "action":
        return (lambda c: c.action) if not parts else (lambda c: None)
    if root in ("data", "context"):
        return _dict_getter(root, parts)
    if root == "principal":
        if parts == ("id",):
            return lambda c: c.pid
        if parts == ("type",):
            return lambda c: c.ptype
        if parts == ("roles",):
            return lambda c: c.roles
        if parts and parts[0] == "attrs":
            parts = parts[1:]
        return _dict_getter("pattrs", parts)
    if root == "resource":
        if parts == ("id",):
            return lambda c: c.rid
        if parts == ("kind",):
            return lambda c: c.kind
        if parts and parts[0] == "attrs":
            parts = parts[1:]
        if len(parts) == 1:
            (key,) = parts

            def resource_attr(c: Ctx) -> Any:
                reg = c.reg
                if reg is not None and key in reg:
                    return reg[key]
                return c.rattrs.get(key)

            return resource_attr
        return _dict_getter("rattrs", parts)
    # subject / outcome / output belong to bias and drift rules, not to requests
    return lambda c: None


def _literal_value(expr: ast.Expr, consts: Mapping[str, ast.Expr]) -> tuple[bool, Any]:
    """(True, value) when ``expr`` is constant; lists become tuples.

    A list const inside a list is spliced in (``[EU, "CH"]`` is one flat list),
    as the checker resolves const values.
    """
    if isinstance(expr, ast.Literal):
        return True, expr.value
    if isinstance(expr, ast.ConstRef) and expr.name in consts:
        return _literal_value(consts[expr.name], consts)
    if isinstance(expr, ast.ListExpr):
        values: list[Any] = []
        for item in expr.items:
            ok, v = _literal_value(item, consts)
            if not ok:
                return False, None
            if isinstance(item, ast.ConstRef) and isinstance(v, tuple):
                values.extend(v)
            else:
                values.append(v)
        return True, tuple(values)
    return False, None


def compile_value(expr: ast.Expr, consts: Mapping[str, ast.Expr]) -> Getter:
    ok, value = _literal_value(expr, consts)
    if ok:
        return lambda c: value
    if isinstance(expr, ast.Path):
        return _path_getter(expr)
    if isinstance(expr, ast.ListExpr):
        parts = tuple((compile_value(i, consts), isinstance(i, ast.ConstRef)) for i in expr.items)

        def list_value(c: Ctx) -> tuple:
            out: list[Any] = []
            for getter, splice in parts:
                v = getter(c)
                if splice and isinstance(v, tuple):
                    out.extend(v)
                else:
                    out.append(v)
            return tuple(out)

        return list_value
    if isinstance(expr, ast.ConstRef):  # unresolved: the checker reports it; never true here
        return lambda c: None
    pred = compile_expr(expr, consts)
    return pred


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _members(value: Any) -> Any:
    """Containers ``in`` may look into; anything else (including strings) has no members."""
    return value if isinstance(value, (tuple, list, frozenset, set)) else ()


def _compile_compare(expr: ast.Compare, consts: Mapping[str, ast.Expr]) -> Pred:
    op = expr.op
    left = compile_value(expr.left, consts)
    rconst, rvalue = _literal_value(expr.right, consts)
    if op in ("in", "not in"):
        negate = op == "not in"
        if rconst and isinstance(rvalue, tuple):
            try:
                members: Any = frozenset(rvalue)
            except TypeError:
                members = rvalue

            def in_const(c: Ctx) -> bool:
                v = left(c)
                if v is None:
                    return False
                try:
                    return (v in members) != negate
                except TypeError:
                    return False

            return in_const
        right = compile_value(expr.right, consts)

        def in_value(c: Ctx) -> bool:
            v = left(c)
            r = right(c)
            if v is None or r is None:
                return False
            try:
                return (v in _members(r)) != negate
            except TypeError:
                return False

        return in_value
    if op in ("==", "!="):
        negate = op == "!="
        if rconst:

            def eq_const(c: Ctx) -> bool:
                v = left(c)
                return v is not None and (v == rvalue) != negate

            return eq_const
        right = compile_value(expr.right, consts)

        def eq_value(c: Ctx) -> bool:
            v = left(c)
            r = right(c)
            return v is not None and r is not None and (v == r) != negate

        return eq_value
    cmp = _ORDER[op]
    if rconst:
        if isinstance(rvalue, (int, float)) and not isinstance(rvalue, bool):
            bound = rvalue
            number_cmp = {
                "<": lambda v: v < bound, "<=": lambda v: v <= bound,
                ">": lambda v: v > bound, ">=": lambda v: v >= bound,
            }[op]

            def order_number(c: Ctx) -> bool:
                v = left(c)
                if v.__class__ is int or v.__class__ is float:
                    return number_cmp(v)
                return False

            return order_number

        def order_const(c: Ctx) -> bool:
            v = left(c)
            if v is None or isinstance(v, bool):
                return False
            try:
                return bool(cmp(v, rvalue))
            except TypeError:
                return False

        return order_const
    right = compile_value(expr.right, consts)

    def order_value(c: Ctx) -> bool:
        v = left(c)
        r = right(c)
        if v is None or r is None or isinstance(v, bool) or isinstance(r, bool):
            return False
        try:
            return bool(cmp(v, r))
        except TypeError:
            return False

    return order_value


def compile_expr(expr: ast.Expr | None, consts: Mapping[str, ast.Expr]) -> Pred:
    """Turn a condition into a closure ``Ctx -> bool`` that never raises."""
    if expr is None:
        return _true
    if isinstance(expr, ast.Compare):
        return _compile_compare(expr, consts)
    if isinstance(expr, ast.And):
        items = tuple(compile_expr(i, consts) for i in expr.items)
        if len(items) == 2:
            a, b = items
            return lambda c: a(c) and b(c)
        return lambda c: all(p(c) for p in items)
    if isinstance(expr, ast.Or):
        items = tuple(compile_expr(i, consts) for i in expr.items)
        if len(items) == 2:
            a, b = items
            return lambda c: a(c) or b(c)
        return lambda c: any(p(c) for p in items)
    if isinstance(expr, ast.Not):
        inner = compile_expr(expr.operand, consts)
        return lambda c: not inner(c)
    ok, value = _literal_value(expr, consts)
    if ok:
        result = value is True
        return lambda c: result
    getter = compile_value(expr, consts)
    return lambda c: getter(c) is True


def action_guard(expr: ast.Expr | None, consts: Mapping[str, ast.Expr]) -> frozenset[str] | None:
    """The actions a condition can hold for, when it says so (``action == "pay" and ...``); None if any.

    Lets the evaluator skip gates about other actions without running them.
    """
    if isinstance(expr, ast.Compare) and isinstance(expr.left, ast.Path) and expr.left.root == "action" \
            and not expr.left.parts:
        ok, value = _literal_value(expr.right, consts)
        if ok and expr.op == "==" and isinstance(value, str):
            return frozenset((value,))
        if ok and expr.op == "in" and isinstance(value, tuple):
            return frozenset(v for v in value if isinstance(v, str))
        return None
    if isinstance(expr, ast.And):
        guards = [g for g in (action_guard(i, consts) for i in expr.items) if g is not None]
        return frozenset.intersection(*guards) if guards else None
    if isinstance(expr, ast.Or):
        guards = [action_guard(i, consts) for i in expr.items]
        if any(g is None for g in guards):
            return None
        return frozenset().union(*guards)  # type: ignore[arg-type]
    return None


def expr_text(expr: ast.Expr | None) -> str:
    """Readable source-like text of an expression, for explanations."""
    if expr is None:
        return "true"
    if isinstance(expr, ast.Literal):
        v = expr.value
        if isinstance(v, bool):
            return "true" if v else "false"
        return f'"{v}"' if isinstance(v, str) else repr(v)
    if isinstance(expr, ast.ListExpr):
        return "[" + ", ".join(expr_text(i) for i in expr.items) + "]"
    if isinstance(expr, ast.Path):
        return expr.dotted
    if isinstance(expr, ast.ConstRef):
        return expr.name
    if isinstance(expr, ast.Compare):
        return f"{expr_text(expr.left)} {expr.op} {expr_text(expr.right)}"
    if isinstance(expr, ast.And):
        return " and ".join(_paren(i) for i in expr.items)
    if isinstance(expr, ast.Or):
        return " or ".join(_paren(i) for i in expr.items)
    if isinstance(expr, ast.Not):
        return f"not {_paren(expr.operand)}"
    return "?"


def _paren(expr: ast.Expr) -> str:
    text = expr_text(expr)
    return f"({text})" if isinstance(expr, (ast.And, ast.Or)) else text


def expr_paths(expr: ast.Expr | None) -> tuple[ast.Path, ...]:
    """Every attribute path an expression reads, in order, without repeats."""
    found: dict[str, ast.Path] = {}

    def walk(e: ast.Expr | None) -> None:
        if isinstance(e, ast.Path):
            found.setdefault(e.dotted, e)
        elif isinstance(e, ast.Compare):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, (ast.And, ast.Or, ast.ListExpr)):
            for i in e.items:
                walk(i)
        elif isinstance(e, ast.Not):
            walk(e.operand)

    walk(expr)
    return tuple(found.values())


# --- compiled declarations ------------------------------------------------------------


def _has_glob(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def pattern_shape(pattern: str) -> tuple[str, Any]:
    """Classify a resource-id glob once: ("any", None), ("exact", id), ("prefix", p) or ("glob", match)."""
    if pattern == "*":
        return "any", None
    if not _has_glob(pattern):
        return "exact", pattern
    prefix = pattern[:-1]
    if pattern[-1] == "*" and not _has_glob(prefix):
        return "prefix", prefix
    return "glob", re.compile(fnmatch.translate(pattern)).match


def compile_pattern(pattern: str) -> Callable[[str | None], bool] | None:
    """``None`` for ``*`` (matches every id); equality or a prefix test when that is all it takes."""
    kind, arg = pattern_shape(pattern)
    if kind == "any":
        return None
    if kind == "exact":
        return lambda rid: rid == arg
    if kind == "prefix":
        return lambda rid: rid is not None and rid.startswith(arg)
    return lambda rid: rid is not None and arg(rid) is not None


def pattern_segment(pattern: str) -> str | None:
    """The literal first path segment of every id ``pattern`` matches, or None if it varies.

    ``"erp/invoices/*"`` -> ``"erp"``; ``"calc"`` -> ``"calc"``; ``"*"`` or ``"e*/x"`` -> None.
    Rules are pre-filtered by the segment of the request's resource id.
    """
    head = pattern.partition("/")[0]
    return None if _has_glob(head) else head


def fuse_rule_test(pattern: str, when: Pred | None, unless: Pred | None) -> Pred | None:
    """One closure for "id matches and when holds and unless does not"; None if always true."""
    w = None if when is _true else when
    kind, arg = pattern_shape(pattern)
    if unless is None:
        if kind == "any":
            return w
        if kind == "exact":
            return (lambda c: c.rid == arg) if w is None else (lambda c: c.rid == arg and w(c))
        if kind == "prefix":
            return (lambda c: c.rid.startswith(arg)) if w is None else (lambda c: c.rid.startswith(arg) and w(c))
    matcher = compile_pattern(pattern)

    def general(c: Ctx) -> bool:
        if matcher is not None and not matcher(c.rid):
            return False
        if w is not None and not w(c):
            return False
        return unless is None or not unless(c)

    return general


def _cond(ps: PolicySet, scoped: Scoped[Any], expr: ast.Expr | None) -> Pred:
    """Compile a declaration's condition with the consts visible in its package."""
    if expr is None:
        return _true
    return compile_expr(expr, ps.consts.get(scoped.package, {}))


def _reason(scoped: Scoped[Any], message: str, cites: tuple[str, ...], package_cites: Mapping[str, tuple[str, ...]]) -> Reason:
    all_cites = tuple(dict.fromkeys((*cites, *package_cites.get(scoped.package, ()))))
    return Reason(rule=scoped.id, file=scoped.file, line=scoped.line, message=message, cites=all_cites)


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
    test: Pred | None  # id + when + unless fused; None when the rule always matches

    def matches(self, c: Ctx) -> bool:
        """Resource id, ``when`` and ``unless`` (the index already matched the rest)."""
        return self.test is None or self.test(c)


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


@dataclass(frozen=True, slots=True, eq=False)
class CompiledResidency:
    key: int
    id: str
    when: Pred
    regions: frozenset[str]
    reason_base: Reason
    scoped: Scoped[ast.ResidencyDecl]


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
    prefer: tuple[str, ...]
    scoped: Scoped[ast.RouteDecl]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """Everything ``evaluate`` needs, prepared once; immutable and shared across threads."""

    rules: tuple[CompiledRule, ...]
    index: Mapping[tuple[str, str], Bucket]
    role_closure: Mapping[str, frozenset[str]]
    agent_roles: Mapping[str, frozenset[str]]
    registry: Mapping[str, Mapping[str, Any]]
    gates: tuple[CompiledGate, ...]
    residencies: tuple[CompiledResidency, ...]
    budgets: tuple[CompiledBudget, ...]
    budgets_by_scope: Mapping[tuple[str, str], tuple[CompiledBudget, ...]]
    routes: tuple[CompiledRoute, ...]
    policy_set: PolicySet


# --- stages ------------------------------------------------------------------------

Acc = Mapping[str, Any]


def stage_roles(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Role closure (from the checker) and each agent's closed, declared roles."""
    closure = {name: frozenset(roles) for name, roles in ps.role_closure.items()}
    for name in ps.roles:
        closure.setdefault(name, frozenset((name,)))
    agents = {name: ps.roles_of(tuple(r.value for r in a.decl.roles)) for name, a in ps.agents.items()}
    return {"role_closure": closure, "agent_roles": agents}


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


def stage_registry(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    return {"registry": {name: model_attributes(m.decl) for name, m in ps.models.items()}}


def stage_rules(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Closures for every rule's conditions, its id matcher and its ``Reason``."""
    compiled = []
    for key, scoped in enumerate(ps.rules):
        d = scoped.decl
        message = d.because or f"{d.effect} rule {scoped.id} matched"
        when = _cond(ps, scoped, d.when)
        unless = _cond(ps, scoped, d.unless) if d.unless is not None else None
        compiled.append(CompiledRule(
            key=key,
            id=scoped.id,
            effect=d.effect,
            principal_kind=d.principal.kind,
            principal_name=d.principal.name.value if d.principal.name else None,
            actions=tuple(a.value for a in d.actions) or ("*",),
            kind=d.resource_kind.value,
            match_id=compile_pattern(d.resource_pattern),
            when=when,
            unless=unless,
            reason=_reason(scoped, message, d.cites, ps.package_cites),
            scoped=scoped,
            segment=pattern_segment(d.resource_pattern),
            test=fuse_rule_test(d.resource_pattern, when, unless),
        ))
    return {"rules": tuple(compiled)}


def stage_index(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Index rules by (action, kind); ``*`` / ``any`` entries are looked up too."""
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
    return {"index": index}


def stage_gates(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    gates = []
    for key, scoped in enumerate(ps.escalations):
        d = scoped.decl
        message = d.because or f"needs approval by role {d.role.value} (escalation {scoped.id})"
        gates.append(CompiledGate(
            key=key, id=scoped.id, name=d.name.value, when=_cond(ps, scoped, d.when),
            role=d.role.value, within_seconds=d.within.seconds if d.within else None,
            on_timeout=d.on_timeout, distinct_approver=d.distinct_approver,
            reason=_reason(scoped, message, d.cites, ps.package_cites), scoped=scoped,
            actions=action_guard(d.when, ps.consts.get(scoped.package, {})),
        ))
    return {"gates": tuple(gates)}


def stage_residency(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    out = []
    for key, scoped in enumerate(ps.residencies):
        d = scoped.decl
        consts = ps.consts.get(scoped.package, {})
        ok, value = _literal_value(d.regions, consts)
        regions = frozenset(v for v in (value if ok and isinstance(value, tuple) else ()) if isinstance(v, str))
        message = d.because or f"residency {scoped.id} requires a region in {sorted(regions)}"
        out.append(CompiledResidency(
            key=key, id=scoped.id, when=_cond(ps, scoped, d.when), regions=regions,
            reason_base=_reason(scoped, message, d.cites, ps.package_cites), scoped=scoped,
        ))
    return {"residencies": tuple(out)}


def stage_budgets(ps: PolicySet, acc: Acc) -> dict[str, Any]:
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
            reason_base=_reason(scoped, f"budget {scoped.id} exceeded", (), ps.package_cites),
            scoped=scoped,
        )
        out.append(budget)
        by_scope.setdefault((d.scope.kind, d.scope.value), []).append(budget)
    return {"budgets": tuple(out), "budgets_by_scope": {k: tuple(v) for k, v in by_scope.items()}}


def stage_routes(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    out = []
    for key, scoped in enumerate(ps.routes):
        d = scoped.decl
        out.append(CompiledRoute(key=key, id=scoped.id, when=_cond(ps, scoped, d.when),
                                 prefer=tuple(n.value for n in d.prefer), scoped=scoped))
    return {"routes": tuple(out)}


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
