"""Compile a checked ``PolicySet`` into an immutable evaluator, once, at load time.

Compilation is an ordered tuple of named stages (``STAGES``), each a pure
function of the policy set and what earlier stages produced, so each can be
tested alone. The result, ``CompiledPolicy``, holds:

* conditions turned into Python closures over a ``Ctx`` (see ``conditions.py``);
* rules as plain data (``CompiledRule``): what the declaration says, with
  conditions written alike kept once in the set's table; each rule's closures
  (its resource-id glob classified: ``*`` free, exact id, ``prefix**`` as
  ``str.startswith``, ``prefix*`` as that plus no later ``/``, others via
  ``globs.glob_regex``; one fused id+when+unless test) and its ``Reason`` are
  built when a request first reaches it, so a warm load (``cached_stages``)
  reads the rules from the disk cache without any syntax tree;
* the candidate index (``index.py``): rules under the literal prefix of their
  id pattern, then ``(action, kind)``, then role, agent or "any", so a decision
  only looks at rules that can apply to it;
* gates with the actions their condition is limited to, so others are skipped;
* the role closure, the model registry, residency, budget and route plans.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, overload

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
from .scoping import effective, file_scopes, guard_for, guarded, scope_guard



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


def _cond(ps: PolicySet, scoped: Scoped[Any], expr: ast.Expr | None) -> Pred:
    """Compile a declaration's condition with the consts visible in its package and the schemas' normalisation."""
    if expr is None:
        return _true
    return compile_expr(expr, ps.consts.get(scoped.package, {}), schema_normalisers(ps))


def _reason(scoped: Scoped[Any], message: str, cites: tuple[str, ...], package_cites: Mapping[str, tuple[str, ...]],
            file_names: Mapping[str, str]) -> Reason:
    span = scoped.decl.span
    return _reason_at(scoped.id, scoped.package, span.file, span.line, message, cites, package_cites, file_names)


def _reason_at(rule_id: str, package: str, file: str, line: int, message: str, cites: tuple[str, ...],
               package_cites: Mapping[str, tuple[str, ...]], file_names: Mapping[str, str]) -> Reason:
    more = package_cites.get(package)
    all_cites = tuple(dict.fromkeys((*cites, *more) if more else cites)) if cites or more else ()
    return make_reason(rule_id, recorded(file_names, file), line, message, all_cites)


class RuleSource:
    """What the rules of one policy set share and build their lazy parts from.

    ``conditions`` holds each distinct rule condition once, as ``(package, expr)``
    (rules refer to them by position); ``policy_set`` is the set the rules came
    from, for its consts, schemas, cites, file names and, only when a caller asks
    for a rule's ``scoped`` declaration, its syntax trees. It pickles as its
    conditions alone: a warm load binds it to the set it read (``bind``).
    """

    __slots__ = ("conditions", "policy_set", "_preds")

    def __init__(self, conditions: tuple[tuple[str, ast.Expr], ...], policy_set: PolicySet | None = None) -> None:
        self.conditions = conditions
        self.policy_set = policy_set
        self._preds: list[Pred | None] = [None] * len(conditions)

    def __reduce__(self) -> tuple[Any, ...]:
        return RuleSource, (self.conditions,)

    def bind(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set

    def pred(self, ix: int) -> Pred:
        """The closure of condition ``ix``, compiled on first use (two threads may both compile it; equal closures)."""
        found = self._preds[ix]
        if found is None:
            ps = self.policy_set
            assert ps is not None, "a rule source is bound to its policy set before any rule is used"
            package, expr = self.conditions[ix]
            found = self._preds[ix] = compile_expr(expr, ps.consts.get(package, {}), schema_normalisers(ps))
        return found


class _Unbuilt:
    """What a lazy slot of a ``CompiledRule`` holds until first use (an empty slot would raise when read)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unbuilt>"

    def __reduce__(self) -> str:
        return "UNBUILT"  # pickled and copied as the one module-level instance (the slots test ``is UNBUILT``)


UNBUILT: Any = _Unbuilt()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule as decisions use it: plain data, set when the rule is compiled (or read from the
    disk cache). Its fused test and its reason are built when a request first needs them and
    kept (``test``, ``reason``); the parts explanations read (``when``, ``match_id``,
    ``scoped``...) are built each time they are asked for. Loading a large set builds none of
    them. There is no ``__getattr__``: CPython specialises reads of the slots, and a first use
    raises no AttributeError on the way (~1 us each)."""

    key: int  # declaration order across the set; also the decision-cache key and the position in ps.rules
    id: str
    effect: str
    principal_kind: str  # any | role | agent
    principal_name: str | None
    actions: tuple[str, ...]
    kind: str
    pattern: str  # the resource id pattern as written
    source: RuleSource = field(repr=False)
    when_ix: int | None  # position of ``when`` in source.conditions (None: always true)
    unless_ix: int | None  # position of ``unless`` (None: none)
    bounds: tuple[frozenset[str] | None, frozenset[str] | None] | None  # scope (workflows, actions); None: every request
    package: str
    because: str | None
    cites: tuple[str, ...]
    file: str  # as parsed (recorded through source.policy_set.file_names)
    line: int
    # UNBUILT until first read through ``test`` and ``reason`` (two threads may both build one: equal values)
    _test: Pred | None = field(repr=False)
    _reason: Reason = field(repr=False)

    @property
    def test(self) -> Pred | None:
        """Scope, id, ``when`` and ``unless`` in one closure; None when the rule always matches."""
        found = self._test
        if found is UNBUILT:
            found = guarded(self.guard, fuse_rule_test(self.pattern, self.when, self.unless))
            _set_slot(self, "_test", found)
        return found

    @property
    def reason(self) -> Reason:
        """Why a decision names this rule: its id, file, line, message and cites."""
        found = self._reason
        if found is UNBUILT:
            ps = self.source.policy_set
            assert ps is not None
            found = _reason_at(self.id, self.package, self.file, self.line,
                               self.because or f"{self.effect} rule {self.id} matched", self.cites,
                               ps.package_cites, ps.file_names)
            _set_slot(self, "_reason", found)
        return found

    @property
    def when(self) -> Pred:
        return _true if self.when_ix is None else self.source.pred(self.when_ix)

    @property
    def unless(self) -> Pred | None:
        return None if self.unless_ix is None else self.source.pred(self.unless_ix)

    @property
    def match_id(self) -> Callable[[str | None], bool] | None:
        return compile_pattern(self.pattern)

    @property
    def guard(self) -> Pred | None:
        """Its package scope and ``applies to`` (scoping.py); None: every request."""
        return None if self.bounds is None else scope_guard(*self.bounds)

    @property
    def scoped(self) -> Scoped[ast.RuleDecl]:
        """Its declaration (reads the syntax trees of a set loaded from the disk cache)."""
        ps = self.source.policy_set
        assert ps is not None
        scoped = ps.rules[self.key]
        if scoped.id != self.id:
            raise RuntimeError(f"rule {self.key} is {scoped.id}, compiled as {self.id}: policy set and rules disagree")
        return scoped

    @property
    def segment(self) -> str | None:
        """The literal first segment of the ids it can match (see pattern_segment)."""
        return pattern_segment(self.pattern)

    def matches(self, c: Ctx) -> bool:
        """Resource id, ``when`` and ``unless`` (the index already matched the rest)."""
        test = self.test
        return test is None or test(c)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its plain fields: the lazy ones are built again after loading."""
        return _make_rule, (*_rule_fields(self), UNBUILT, UNBUILT)


_set_slot = object.__setattr__

# CompiledRule(...) with its plain fields given in this order, then UNBUILT twice, setting the slots
# directly (a third of the time ``__init__`` takes through ``object.__setattr__``; ast.fast_constructor)
_RULE_FIELDS = ("key", "id", "effect", "principal_kind", "principal_name", "actions", "kind", "pattern",
                "source", "when_ix", "unless_ix", "bounds", "package", "because", "cites", "file", "line")
_LAZY_FIELDS = ("_test", "_reason")
_make_rule = fast_constructor(CompiledRule, _RULE_FIELDS + _LAZY_FIELDS)
_make_rule.__module__, _make_rule.__name__, _make_rule.__qualname__ = __name__, "_make_rule", "_make_rule"
_rule_fields = attrgetter(*_RULE_FIELDS)
_COLUMN_FIELDS = tuple(f for f in _RULE_FIELDS if f != "source")  # cached per rule; one source serves them all
_rule_columns = attrgetter(*_COLUMN_FIELDS)  # cached_stages
_COLUMN_AT = {name: i for i, name in enumerate(_COLUMN_FIELDS)}  # CachedRules
if [f.name for f in fields(CompiledRule)] != [*_RULE_FIELDS, *_LAZY_FIELDS]:
    raise TypeError("CompiledRule's fields changed: update _RULE_FIELDS or _LAZY_FIELDS and the call in stage_rules")


class CachedRules(Sequence[CompiledRule]):
    """The rules of a set read from the disk cache, each made from the cached columns when first read.

    A warm load of 100,000 rules spent ~40% of its time making every ``CompiledRule`` (19 slots each),
    while a request reads a few and the candidate index groups them by fields it takes from the columns
    (``fields_of``). Two threads reading a rule for the first time may both make it: equal values, and a
    rule already stored when one is made is the one returned. Pickled as a tuple of its rules, as
    ``compile`` gives them.
    """

    __slots__ = ("_columns", "_made", "_make")

    def __init__(self, columns: tuple[tuple[Any, ...], ...], source: RuleSource) -> None:
        self._columns = columns  # one tuple per plain field of _RULE_FIELDS but ``source`` (cached_stages)
        self._made: list[CompiledRule | None] = [None] * len(columns[0]) if columns else []
        self._make = _rule_maker(columns, source)

    def __len__(self) -> int:
        return len(self._made)

    @overload
    def __getitem__(self, i: int) -> CompiledRule: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[CompiledRule, ...]: ...

    def __getitem__(self, i: int | slice) -> CompiledRule | tuple[CompiledRule, ...]:
        if isinstance(i, slice):
            return tuple(map(self.__getitem__, range(*i.indices(len(self._made)))))
        made = self._made
        rule = made[i]
        if rule is None:
            rule = self._make(i)
            first = made[i]
            if first is None:
                made[i] = rule
            else:
                rule = first
        return rule

    def __iter__(self) -> Iterator[CompiledRule]:
        return map(self.__getitem__, range(len(self._made)))

    def fields_of(self, names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """Each rule's ``names`` fields (plain ones, not ``source``), read from the columns: no rule is made."""
        return zip(*(self._columns[_COLUMN_AT[name]] for name in names))

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (tuple(self),)


def _rule_maker(columns: tuple[tuple[Any, ...], ...], source: RuleSource) -> Callable[[int], CompiledRule]:
    """``make(i)``: rule ``i`` of ``columns`` (``cached_stages``' order), its slots set straight from the columns.

    Generated as ``ast.fast_constructor`` is: one line a slot, no list of values and no call with ``*``
    (the first request to reach a rule of a warm-loaded set pays for making it).
    """
    scope: dict[str, Any] = {"new": object.__new__, "cls": CompiledRule, "source": source, "UNBUILT": UNBUILT}
    lines = []
    for n, name in enumerate(_RULE_FIELDS + _LAZY_FIELDS):
        scope[f"set{n}"] = CompiledRule.__dict__[name].__set__
        if name in _COLUMN_AT:
            scope[f"c{n}"] = columns[_COLUMN_AT[name]]
            value = f"c{n}[i]"
        else:  # the one source of every rule, or a lazy part (UNBUILT)
            value = "source" if name == "source" else "UNBUILT"
        lines.append(f"    set{n}(rule, {value})\n")
    exec("def make(i):\n    rule = new(cls)\n" + "".join(lines) + "    return rule\n", scope)  # noqa: S102
    return scope["make"]


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

    rules: Sequence[CompiledRule]  # a tuple, or ``CachedRules`` after a warm load
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
    scoped_workflows: frozenset[str] = frozenset()  # the workflows a rule's, residency's or gate's scope names
    _buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict, repr=False)  # ``index``, once read

    @property
    def index(self) -> Mapping[tuple[str, str], Bucket]:
        """Rules by (action, kind), then principal (``buckets``); built on first use: decisions use ``candidates``."""
        if not self._buckets and self.rules:
            self._buckets.update(buckets(self.rules))  # two threads may both fill it, alike
        return self._buckets

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


def condition_key(package: str, expr: ast.Expr) -> object:
    """Rule conditions with equal keys share one closure (many rules repeat ``principal.dept == "d1"``).

    The repr spells every value with its type (``1``, ``1.0`` and ``true`` differ,
    though they are equal in Python) and leaves out where the condition is written;
    a closure depends only on the condition, the consts of its package and the
    schemas' normalisation, and keeps no state.
    """
    return package, repr(expr)


def stage_rules(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Every rule as plain data (its closures and reason are built on first use; ``CompiledRule``).

    What the declarations hold is copied out here, so a rule loaded from the disk
    cache needs no syntax tree: its id, effect, principal, actions, kind and id
    pattern, its conditions (by position in the set's table of distinct ones), its
    scope bounds, ``because``, cites and where it is written.
    """
    compiled = []
    scopes = file_scopes(ps.files)
    table: dict[object, int] = {}
    conditions: list[tuple[str, ast.Expr]] = []
    source = RuleSource((), ps)
    alike: dict[object, Any] = {}  # equal small values (action tuples, bounds, names) kept once, also on disk
    intern = sys.intern

    def condition(package: str, expr: ast.Expr | None) -> int | None:
        if expr is None:
            return None
        key = condition_key(package, expr)
        found = table.get(key)
        if found is None:
            found = table[key] = len(conditions)
            conditions.append((package, expr))
        return found

    for key, scoped in enumerate(ps.rules):
        d = scoped.decl
        package = intern(scoped.package)
        workflows, in_actions = effective(scopes.get(d.span), d.applies)
        bounds = None if workflows is None and in_actions is None else alike.setdefault(
            (workflows, in_actions), (workflows, in_actions))
        actions = tuple(intern(a.value) for a in d.actions) or ("*",)
        name = d.principal.name.value if d.principal.name else None
        span = d.span
        compiled.append(_make_rule(  # in the order of _RULE_FIELDS
            key,
            scoped.id,
            intern(d.effect),
            intern(d.principal.kind),
            intern(name) if name is not None else None,
            alike.setdefault(actions, actions),
            intern(d.resource_kind.value),
            intern(d.resource_pattern),  # rules about one project share their pattern (and on disk)
            source,
            condition(package, d.when),
            condition(package, d.unless),
            bounds,
            package,
            d.because,
            alike.setdefault(d.cites, d.cites),
            intern(span.file),
            span.line,
            UNBUILT,
            UNBUILT,
        ))
    source.conditions = tuple(conditions)
    source._preds = [None] * len(conditions)
    return {"rules": tuple(compiled)}


def buckets(rules: Sequence[CompiledRule]) -> dict[tuple[str, str], Bucket]:
    """Rules by (action, kind), ``*`` / ``any`` as ``*``, then by who they are about."""
    raw: dict[tuple[str, str], tuple[list, dict, dict]] = {}
    for rule in rules:
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
    return {
        k: Bucket(tuple(a), {r: tuple(v) for r, v in br.items()}, {n: tuple(v) for n, v in ba.items()})
        for k, (a, br, ba) in raw.items()
    }


def stage_index(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """The candidate index (``index.py``) that decisions use: rules under the literal prefix of their id
    pattern, then (action, kind) and principal. (``CompiledPolicy.index`` is built when first read.)"""
    return {"candidates": CandidateIndex(acc["rules"])}


def stage_gates(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """Escalation gates with their condition, approver role, deadline and action guard."""
    gates = []
    scopes = ps.scopes_beside_rules()
    for key, scoped in enumerate(ps.escalations):
        d = scoped.decl
        guard = guard_for(scopes, d)
        actions = action_guard(d.when, ps.consts.get(scoped.package, {}))
        in_scope = effective(scopes.get(d.span), d.applies)[1]
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
    scopes = ps.scopes_beside_rules()
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


def stage_workflows(ps: PolicySet, acc: Acc) -> dict[str, Any]:
    """The workflows the scopes of rules, residency rules and gates name (the rules' from their bounds, so a
    warm load reads no tree): a request's ``context.workflow`` that only looks like one is malformed."""
    rules = acc["rules"]
    fields_of = getattr(rules, "fields_of", None)
    bounds = (b for (b,) in fields_of(("bounds",))) if fields_of is not None else (r.bounds for r in rules)
    names: set[str] = set()
    for bound in bounds:
        if bound is not None and bound[0]:
            names |= bound[0]
    scopes = ps.scopes_beside_rules()
    for scoped in (*ps.residencies, *ps.escalations):
        workflows = effective(scopes.get(scoped.decl.span), scoped.decl.applies)[0]
        if workflows:
            names |= workflows
    return {"scoped_workflows": frozenset(names)}


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
            limits=tuple(CompiledLimit(limit.amount, limit.unit, limit.window) for limit in d.limits),
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
    ("workflows", stage_workflows),
    ("budgets", stage_budgets),
    ("routes", stage_routes),
    ("rate_limits", stage_rate_limits),
    ("schemas", stage_schemas),
)


# The stages whose results a warm load reads from the disk cache instead of running them: those that
# read every rule's declaration (the syntax trees a warm load does not read). See ``cached_stages``.
CACHED_STAGES = ("rules", "rate_limits")


def compile_policy(ps: PolicySet, stages: tuple[tuple[str, Stage], ...] = STAGES, *,
                   done: Mapping[str, Mapping[str, Any]] | None = None) -> CompiledPolicy:
    """Run every stage in order and freeze the result.

    ``done`` holds results of stages already run for this policy set (by stage
    name, as ``restore_cached`` gives them): those stages are not run again.
    The cyclic garbage collector is paused meanwhile: compiling allocates many
    long-lived objects, and collections would rescan the whole AST repeatedly.
    """
    acc: dict[str, Any] = {}
    paused = gc.isenabled()
    gc.disable()
    try:
        for name, stage in stages:
            acc.update(done[name] if done is not None and name in done else stage(ps, acc))
    finally:
        if paused:
            gc.enable()
    return CompiledPolicy(policy_set=ps, **acc)


def cached_stages(cp: CompiledPolicy) -> dict[str, dict[str, Any]]:
    """The results of ``CACHED_STAGES`` in ``cp``, picklable, for ``restore_cached``.

    The rules go as columns, one tuple per plain field (``source`` apart, once):
    pickled rule by rule, each rule's field tuple would be memoized, so reading
    them back would hold 100,000 such tuples (~20 MB) until the end of the read.
    """
    rules = cp.rules
    source = rules[0].source if rules else RuleSource(())
    columns = rules._columns if type(rules) is CachedRules else tuple(zip(*map(_rule_columns, rules)))
    return {"rules": {"columns": columns, "source": source}, "rate_limits": {"rate_limits": dict(cp.rate_limits)}}


def cached_conditions(cached: Mapping[str, Mapping[str, Any]]) -> tuple[ast.Expr, ...]:
    """Every distinct condition of the rules in ``cached`` (() when it is not what ``cached_stages`` gives)."""
    try:
        source = cached["rules"]["source"]
        return tuple(expr for _, expr in source.conditions) if type(source) is RuleSource else ()
    except (KeyError, TypeError, ValueError):
        return ()


def restore_cached(cached: Mapping[str, Mapping[str, Any]], ps: PolicySet) -> dict[str, dict[str, Any]] | None:
    """``done`` for ``compile_policy`` from what ``cached_stages`` gave (read from the disk), its rules bound
    to ``ps``; None when ``cached`` is not of that shape (a damaged entry: the caller builds again)."""
    try:
        columns, source = cached["rules"]["columns"], cached["rules"]["source"]
        limits = cached["rate_limits"]["rate_limits"]
    except (KeyError, TypeError):
        return None
    if (set(cached) != set(CACHED_STAGES) or type(source) is not RuleSource or not isinstance(limits, dict)
            or not isinstance(columns, tuple) or not all(type(c) is tuple for c in columns)):
        return None
    count = len(columns[0]) if columns else 0
    if columns and (len(columns) != len(_RULE_FIELDS) - 1 or any(len(c) != count for c in columns)
                    or columns[0] != tuple(range(count))):  # keys: 0, 1, ... (positions in ps.rules)
        return None
    source.bind(ps)
    return {"rules": {"rules": CachedRules(columns, source) if count else ()}, "rate_limits": {"rate_limits": limits}}
