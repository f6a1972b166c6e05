"""Decide one request against a ``CompiledPolicy``: pure, thread-safe, never raises.

The order of checks is the meaning of decisions (docs/engine.md):

1. a malformed request, or an undeclared agent, is denied (fail closed);
2. a routed ``invoke`` (kind model, no resource id, a ``route`` rule matching) is
   decided once per ``prefer`` candidate; the first one not denied wins;
3. for one resource: any matching ``deny`` rule, blocked model or residency
   violation denies; else no matching ``allow`` denies (default deny); else a
   budget over its limit denies, escalates or reroutes; else an escalation gate
   without a valid approval escalates; else allow.

The hot path does no pydantic validation: request fields are checked by hand,
candidate rules come from an index keyed by (action, kind, principal), and
decisions without obligations are built once and reused (they are immutable).
The only I/O is the budget ledger read, and only for requests a budget covers.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .budgets import BudgetLedger, LiveTotals, WindowStarts, live_reader, utc, window_reader, windowed_usage
from .compile import CompiledBudget, CompiledGate, CompiledPolicy, CompiledRule, Ctx
from .conditions import ConditionError, Pred, holds
from .decision import RESOURCE_KINDS, ApprovalRequired, BudgetWarning, Decision, Reason, Request, make_decision
from .approval_binding import binding_errors
from .ast import ACTION_NAME
from .identity import IdentityError, canonical_identity, id_problem, mixed_script, name_fold, plain_id
from .rule_paths import recorded

_CACHE_LIMIT = 50_000
# candidate rules with their fused tests (``CompiledRule.test``), as ``decide`` runs them
Tested = tuple[tuple[Pred | None, CompiledRule], ...]
_NO_VALIDATOR = object()
_EMPTY: dict[str, Any] = {}

DEFAULT_DENY = Reason(rule="<default-deny>", message="no allow rule matches this request (default deny)")


def _builtin(rule: str, message: str, candidate: str | None = None) -> Reason:
    return Reason(rule=rule, message=message, candidate=candidate)


def _errored_reason(base: Reason, error: str) -> Reason:
    """The declaration's reason, saying it denied because its condition could not be decided."""
    return base.model_copy(update={"message": f"denied (fail closed): {error}"})


class Outcome:
    """The result of deciding for one resource, before it becomes a ``Decision``."""

    __slots__ = ("effect", "reasons", "obligations", "route", "fresh", "errors")

    def __init__(self, effect: str, reasons: tuple[Reason, ...], obligations: tuple = (), route: str | None = None,
                 fresh: bool = False, errors: tuple[str, ...] = ()):
        self.effect = effect
        self.reasons = reasons
        self.obligations = obligations
        self.route = route
        self.fresh = fresh or bool(errors)  # reasons built for this request only: not worth caching
        self.errors = errors  # condition errors that denied (see ``_errored``)


_WINDOW_WORDS = {"hour": "this hour", "day": "today", "month": "this month"}


def _amount(x: float) -> str:
    """``1,999,500`` or ``19.9991``: readable amounts for budget reasons."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.4f}".rstrip("0").rstrip(".") or "0"


def _folded(names: Iterable[str]) -> dict[str, str]:
    """Declared names by ``name_fold`` (to refuse a request name that only looks like one of them)."""
    return {name_fold(name): name for name in names}


def _unlike(written: str, declared: str, named: str) -> str:
    """How ``written`` differs from ``declared``, the name it folds to (``named``: that name in words)."""
    if written.casefold() == declared.casefold():
        return f"{written!r} differs only in case from {named}; names are exact"
    return (f"{written!r} is {named} written with other characters (width, spacing, dashes, invisible ones, "
            "phonetic look-alikes); names are exact")


def _twin_problem(rid: str, written: str, named: str) -> str:
    """Why an id is malformed whose first segments differ only in case from a prefix the rules name."""
    shown = json.dumps(rid, ensure_ascii=True)[:80]
    return (f"resource.id: {shown}: {written!r} differs only in case from {named!r}, which the rules name; "
            "ids are exact")


# the fields of a request's principal and resource; any other beside them is an attribute (``_lenient``)
PRINCIPAL_KEYS = frozenset(("id", "type", "roles", "attrs"))
RESOURCE_KEYS = frozenset(("id", "kind", "attrs"))


def _lenient(obj: dict, attrs: Any, known: frozenset[str], where: str, errors: list[str]) -> Any:
    """Attributes written beside ``id`` instead of under ``attrs`` count too; one written in both places with
    two values is malformed (which one counts is a guess another reader of the request may guess otherwise)."""
    if attrs.__class__ is not dict and not isinstance(attrs, dict):
        return attrs  # already reported as malformed
    extra = {k: v for k, v in obj.items() if k not in known}
    for key, value in extra.items():
        if key in attrs and (attrs[key].__class__ is not value.__class__ or attrs[key] != value):
            errors.append(f"{where}.{key}: written beside id and under attrs with two values; write it once")
    return {**extra, **attrs}


def _estimate_fields(budgets: Any) -> tuple[str, ...]:
    """``tokens`` plus ``cost_<unit>`` for every money unit a budget limits (what ``estimate`` reads)."""
    if not budgets:
        return ()
    units = {limit.unit for budget in budgets for limit in budget.limits}
    return ("tokens", *sorted(f"cost_{u.lower()}" for u in units if u != "tokens"))


def _estimate_ok(value: Any) -> bool:
    """A finite, non-negative int or float (not a bool): a usable usage estimate."""
    if value.__class__ is int:
        return value >= 0
    if value.__class__ is float:
        return 0.0 <= value < _INF  # NaN fails both comparisons
    return False


_INF = float("inf")


def _requesters(c: Ctx) -> tuple[str, ...]:
    """Who asked, canonical: the principal and the person an agent acts for (``principal.attrs.requested_by``).

    Empty when either has no canonical id: then no approver can be told apart
    from the requester, and a gate that needs a distinct approver stays shut.
    """
    try:
        pid = canonical_identity(c.pid)
        by = c.pattrs.get("requested_by")
        return (pid,) if by is None else (pid, canonical_identity(by))
    except IdentityError:
        return ()


def _unique(items: tuple) -> tuple:
    """``items`` without repeats (first kept), e.g. one approval asked for by two budgets."""
    if len(items) < 2:
        return items
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return tuple(seen) if len(seen) != len(items) else items


def _number(value: Any) -> float | None:
    if value.__class__ is int or value.__class__ is float:
        return value
    return None


class Evaluator:
    """A compiled policy plus the state a decision may read: budget ledger and block list."""

    def __init__(self, compiled: CompiledPolicy, *, policy_hash: str, ledger: BudgetLedger,
                 blocked: Container[str] = frozenset()) -> None:
        self.compiled = compiled
        self.policy_hash = policy_hash
        self.ledger = ledger
        self.usage = windowed_usage(ledger)
        self._window_total = window_reader(ledger)  # running totals read directly, when the ledger has them
        self._windows = WindowStarts()
        live = live_reader(ledger)  # totals kept current in place: a limit's usage is one attribute read
        self._live = LiveTotals(ledger, live, self._windows) if live is not None else None
        self._in_scope: dict[tuple, tuple[CompiledBudget, ...]] = {}
        # the request fields the budget check reads as estimates: checked when budgets exist
        self._estimate_fields = _estimate_fields(compiled.budgets)
        self.blocked = blocked
        self._role_closure = compiled.role_closure
        self._agent_roles = compiled.agent_roles
        self._registry = compiled.registry
        self._has_residency = bool(compiled.residencies)
        self._schemas = compiled.schemas
        self._has_schemas = bool(compiled.schemas)
        self._validators: dict[str, Any] = {}
        self._roles_cache: dict[tuple[str, ...], frozenset[str]] = {}
        # names are exact; one that differs only in case from a declared one is refused, never guessed
        self._model_fold = _folded(compiled.registry)
        self._agent_fold = _folded(compiled.agent_roles)
        self._role_fold = _folded(compiled.role_closure)
        self._case_errors: dict[tuple[str, ...], str] = {}
        # workflows a budget is scoped to: a context.workflow that only looks like one would escape its budget;
        # and those a scope names: one that only looks like one would escape the scoped denies and gates
        self._workflows = frozenset(value for kind, value in compiled.budgets_by_scope if kind == "workflow")
        self._named_workflows = self._workflows | compiled.scoped_workflows
        self._workflow_fold = _folded(self._named_workflows)
        self._actions = compiled.policy_set.actions
        self._action_fold = _folded(compiled.policy_set.actions)
        self._action_problems: dict[str, str] = {}  # action the rules do not name -> why malformed ("": not)
        self._candidate_index = compiled.candidates
        self._candidates_cache: OrderedDict[tuple, tuple[tuple, tuple]] = OrderedDict()
        self._decisions: dict[tuple, Decision] = {}
        self._gates: dict[str, tuple[CompiledGate, ...]] = {}
        self._obligations: dict[tuple, ApprovalRequired] = {}
        self._interned: dict[tuple, Reason] = {}

    # --- entry point -------------------------------------------------------------

    def evaluate(self, request: Any, *, now: datetime | None = None,
                 directory: Mapping[str, Any] | None = None) -> Decision:
        """Decide ``request`` (a dict in the JSON shape, or a ``Request``). Never raises."""
        try:
            ctx = self.context(request, now)
            if ctx.__class__ is not Ctx:
                return ctx  # a deny Decision for a malformed request or undeclared agent
            if ctx.approvals:  # replayed or foreign approvals deny the request
                shown = request.model_dump(exclude_none=True) if isinstance(request, Request) else request
                unbound = binding_errors(shown, now)
                if unbound:
                    return self._malformed(unbound)
            if ctx.rid is None:
                out = self._routed(ctx, now, directory)
            else:
                out = self.decide(ctx, now, directory, 0)
                if out.effect != "deny":  # an id that differs from one the rules name only in case is refused
                    twin = self._candidate_index.case_twin(ctx.rid)
                    if twin is not None:
                        return self._malformed([_twin_problem(ctx.rid, *twin)])
            return self._decision(out)
        except Exception as exc:  # fail closed: a bug must never turn into an allow
            return self._malformed([f"internal error while deciding: {type(exc).__name__}: {exc}"])

    # --- request -------------------------------------------------------------------

    def context(self, request: Any, now: datetime | None = None) -> Ctx | Decision:
        """Check the request by hand and build the ``Ctx`` the closures read (``now``: the decision's clock)."""
        if request.__class__ is not dict and not isinstance(request, dict):
            if isinstance(request, Request):
                request = request.model_dump()
            elif isinstance(request, Mapping):
                request = dict(request)
            else:
                return self._malformed(["request: must be a JSON object"])
        errors: list[str] = []
        p = request.get("principal")
        if p.__class__ is not dict and not isinstance(p, dict):
            errors.append("principal: missing" if p is None else "principal: must be an object")
            p = _EMPTY
            pid = ptype = ""
            raw_roles: Any = ()
            pattrs: Any = _EMPTY
        else:
            pid = p.get("id")
            if pid.__class__ is not str or not pid:
                errors.append("principal.id: must be a non-empty string")
            ptype = p.get("type")
            known = (pid is not None) + (ptype is not None)  # keys seen, to spot attributes beside them
            if ptype is None:
                ptype = "user"
            elif ptype != "user" and ptype != "agent":
                errors.append('principal.type: must be "user" or "agent"')
            raw_roles = p.get("roles")
            if raw_roles.__class__ is list or raw_roles.__class__ is tuple:
                known += 1
                for role in raw_roles:
                    if role.__class__ is not str:
                        errors.append("principal.roles: must be a list of strings")
                        break
            elif raw_roles is None:
                raw_roles = ()
            else:
                known += 1
                errors.append("principal.roles: must be a list of strings")
            pattrs = p.get("attrs")
            if pattrs is None:
                pattrs = _EMPTY
            else:
                known += 1
                if pattrs.__class__ is not dict and not isinstance(pattrs, dict):
                    errors.append("principal.attrs: must be an object")
            if len(p) > known:
                pattrs = _lenient(p, pattrs, PRINCIPAL_KEYS, "principal", errors)
        action = request.get("action")
        if action.__class__ is not str or not action:
            errors.append("action: missing" if action is None else "action: must be a non-empty string")
        elif action not in self._actions:  # one the rules name: the usual case, one set lookup
            problem = self._action_problems.get(action)
            if problem is None:
                problem = self._action_problem(action)
            if problem:
                errors.append(problem)
        r = request.get("resource")
        kind = ""
        rid = None
        rattrs: Any = _EMPTY
        if r.__class__ is not dict and not isinstance(r, dict):
            errors.append("resource: missing" if r is None else "resource: must be an object")
        else:
            kind = r.get("kind")
            kind_ok = kind.__class__ is str and kind in RESOURCE_KINDS
            if not kind_ok:
                errors.append(f"resource.kind: must be one of {', '.join(sorted(RESOURCE_KINDS))}")
            rid = r.get("id")
            known = (kind is not None) + (rid is not None)
            if rid is not None and (rid.__class__ is not str or not rid):
                errors.append("resource.id: must be a non-empty string")
            elif rid is not None and not plain_id(rid):
                problem = id_problem(rid)
                if problem is not None:
                    errors.append(f"resource.id: {problem}")
            elif rid is None and kind_ok and (kind != "model" or action != "invoke"):
                errors.append("resource.id: missing (only a routed model invoke may leave it out)")
            rattrs = r.get("attrs")
            if rattrs is None:
                rattrs = _EMPTY
            else:
                known += 1
                if rattrs.__class__ is not dict and not isinstance(rattrs, dict):
                    errors.append("resource.attrs: must be an object")
            if len(r) > known:
                rattrs = _lenient(r, rattrs, RESOURCE_KEYS, "resource", errors)
        data = request.get("data")
        if data is None:
            data = _EMPTY
        elif data.__class__ is not dict and not isinstance(data, dict):
            errors.append("data: must be an object")
        context = request.get("context")
        if context is None:
            context = _EMPTY
        elif context.__class__ is not dict and not isinstance(context, dict):
            errors.append("context: must be an object")
        elif self._estimate_fields and context:
            for field in self._estimate_fields:
                value = context.get(field)
                if value is not None and not _estimate_ok(value):
                    errors.append(f"context.{field}: must be a non-negative number")
        approvals = request.get("approvals")
        if approvals:
            approvals = self._approvals(approvals, errors)
        else:
            approvals = ()
        if self._has_schemas and not errors:  # typed, normalised attributes before any rule runs
            validate = self._validators.get(action, _NO_VALIDATOR)
            if validate is _NO_VALIDATOR:
                validate = self._schemas.validator(action)
                if len(self._validators) > _CACHE_LIMIT:
                    self._validators.clear()
                self._validators[action] = validate
            if validate is not None:
                pattrs, rattrs, data, context = validate((pattrs, rattrs, data, context), errors)
        if self._named_workflows and context and not errors:  # after schemas, which may normalise it
            workflow = context.get("workflow")
            if workflow is not None and (workflow.__class__ is not str or workflow not in self._named_workflows):
                problem = self._workflow_problem(workflow)
                if problem:
                    errors.append(problem)
        if errors:
            return self._malformed(errors)
        if ptype == "agent":
            roles = self._agent_roles.get(pid)
            if roles is None:
                declared = self._agent_fold.get(name_fold(pid))
                if declared is not None:
                    unlike = _unlike(pid, declared, f"the declared agent {declared!r}")
                    return self._malformed([f"principal.id: agent {unlike}"])
                return self._deny_builtin(
                    "<agent-identity>", f"agent {pid!r} is not declared; undeclared agents are denied")
        else:
            key = tuple(raw_roles)
            roles = self._roles_cache.get(key)
            if roles is None:
                roles = self._close_roles(key)
            if self._case_errors and key in self._case_errors:
                return self._malformed([self._case_errors[key]])
        if kind == "model":
            reg = self._registry.get(rid)
            if reg is None and rid is not None:
                declared = self._model_fold.get(name_fold(rid))
                if declared is not None:
                    unlike = _unlike(rid, declared, f"the declared model {declared!r}")
                    return self._malformed([f"resource.id: model {unlike}"])
        else:
            reg = None
        clock = time.time() if now is None else utc(now).timestamp()  # one clock for ``age of``
        return Ctx(pid, ptype, roles, pattrs, action, kind, rid, rattrs, reg, data, context, approvals, clock)

    def _action_problem(self, action: str) -> str:
        """Why ``action`` (not one the rules name) is malformed, or "" when it is a plain other action.

        Refused: anything but an action name as rules spell them (``delete ``,
        ``de<U+200B>lete``, full-width letters), and a name that differs only in
        case from one the rules name (``DELETE`` for ``delete``): either would
        pass by every rule about the action it stands for, and reach ``any``.
        """
        if not ACTION_NAME.fullmatch(action):
            problem = (f"action: {json.dumps(action, ensure_ascii=True)[:80]} is not an action name "
                       "(letters, digits and '_', as rules spell them)")
        else:
            named = self._action_fold.get(name_fold(action))
            problem = "" if named is None else "action: " + _unlike(action, named,
                                                                    f"the action {named!r} the rules name")
        if len(self._action_problems) > _CACHE_LIMIT:
            self._action_problems.clear()
        self._action_problems[action] = problem
        return problem

    def _workflow_problem(self, workflow: Any) -> str:
        """Why ``context.workflow`` (not a workflow a budget or scope names) is malformed, or "" for another one.

        Refused: a name that only looks like a budgeted or scoped workflow's
        (``Invoice-Exceptions``, a trailing space, full width): its spend would
        count against no budget, and the scoped denies and gates of the real
        name would not apply to it. Where a budget names workflows, also a value
        that is not a name (elsewhere it is simply outside every workflow scope).
        """
        if workflow.__class__ is not str or not workflow:
            if not self._workflows:
                return ""
            return ("context.workflow: must be a non-empty string (the workflow's name)"
                    + (f", not {type(workflow).__name__}" if workflow.__class__ is not str else ""))
        declared = self._workflow_fold.get(name_fold(workflow))
        if declared is None:
            mixed = mixed_script(workflow)  # a look-alike letter: no fold finds the workflow it passes for
            return "" if mixed is None else f"context.workflow: {json.dumps(workflow, ensure_ascii=True)} {mixed}"
        named = "a budget" if declared in self._workflows else "a scope"
        return "context.workflow: " + _unlike(workflow, declared, f"the workflow {declared!r} {named} names")

    def _close_roles(self, key: tuple[str, ...]) -> frozenset[str]:
        held: set[str] = set()
        closure = self._role_closure
        for name in key:
            found = closure.get(name)
            if found is None:
                declared = self._role_fold.get(name_fold(name))
                if declared is not None:
                    unlike = _unlike(name, declared, f"the declared role {declared!r}")
                    self._case_errors[key] = f"principal.roles: role {unlike}"
                elif (mixed := mixed_script(name)) is not None:  # a look-alike letter: no fold finds the twin
                    shown = json.dumps(name, ensure_ascii=True)
                    self._case_errors[key] = f"principal.roles: role {shown} {mixed}"
                continue
            held |= found
        roles = frozenset(held)
        if len(self._roles_cache) > _CACHE_LIMIT:
            self._roles_cache.clear()
            self._case_errors.clear()  # entries belong to keys of the roles cache
        self._roles_cache[key] = roles
        return roles

    @staticmethod
    def _approvals(raw: Any, errors: list[str]) -> tuple:
        if raw.__class__ is not list and raw.__class__ is not tuple:
            errors.append("approvals: must be a list")
            return ()
        out = []
        for i, a in enumerate(raw):
            if a.__class__ is not dict and not isinstance(a, dict):
                errors.append(f"approvals[{i}]: must be an object")
                continue
            gate, approver, roles = a.get("gate"), a.get("approver"), a.get("roles")
            if gate.__class__ is not str or approver.__class__ is not str:
                errors.append(f"approvals[{i}]: needs string fields gate and approver")
                continue
            try:
                approver = canonical_identity(approver, f"approvals[{i}].approver")
            except IdentityError as exc:
                errors.append(str(exc))
                continue
            if roles is not None and (not isinstance(roles, (list, tuple)) or not all(isinstance(x, str) for x in roles)):
                errors.append(f"approvals[{i}].roles: must be a list of strings")
                continue
            out.append((gate, approver, tuple(roles) if roles is not None else None))
        return tuple(out)

    # --- deciding -------------------------------------------------------------------

    def candidates(self, c: Ctx) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """(deny rules, allow rules) that could apply to this request (the candidate index), in order.

        For tools (coverage, explanations); ``decide`` uses the cached pairs of ``_pairs``.
        """
        index = self._candidate_index
        return index.pairs(index.node(c.rid), c.action, c.kind, c.roles, c.pid if c.ptype == "agent" else None)

    def _pairs(self, c: Ctx) -> tuple[Tested, Tested]:
        """(deny, allow) rules that could apply, each in declaration order, as ``(test, rule)`` pairs.

        The candidate index (``index.py``) finds them by walking the id's literal
        segments, whatever the number of rules; the pairs are cached by action,
        kind, principal and the deepest index node the id reaches, so every id
        under one prefix (including ids never seen before) shares one entry. The
        cache drops its oldest entry when full (no cliff); a lost race only
        recomputes the same value. Each rule's fused test is read once here, into
        its pair, so ``decide`` calls it from a local and reads the rule only when
        it matched.
        """
        index = self._candidate_index
        node = index.node(c.rid)
        agent = c.pid if c.ptype == "agent" else None
        key = (c.action, c.kind, agent, c.roles, node)
        cache = self._candidates_cache
        found = cache.get(key)
        if found is not None:
            return found
        denies, allows = index.pairs(node, c.action, c.kind, c.roles, agent)
        found = (tuple([(r.test, r) for r in denies]) if denies else (),
                 tuple([(r.test, r) for r in allows]) if allows else ())
        if len(cache) >= _CACHE_LIMIT:
            try:
                cache.popitem(last=False)  # the oldest entry; O(1) (a dict's first entry is not, after deletes)
            except KeyError:  # another thread emptied it meanwhile
                pass
        cache[key] = found
        return found

    def decide(self, c: Ctx, now: datetime | None, directory: Mapping[str, Any] | None, depth: int) -> Outcome:
        """Decide for the one resource in ``c`` (see the module docstring for the order).

        A ``ConditionError`` in a deny rule, residency or escalation condition
        denies (``_errored``); in an allow rule the rule does not apply.
        """
        denies, allows = self._pairs(c)
        try:
            # a rule's reason is read only once it matched: built on its first use (compile.py), most never are
            reasons = [r.reason for test, r in denies if test is None or test(c)]
        except ConditionError:
            errors: list[str] = []
            reasons = self._erroring(denies, c, errors)
            if errors:
                return self._errored(reasons, errors)
        if c.kind == "model" and c.rid in self.blocked:
            reasons.append(self._intern(("blocked", c.rid), "<blocked-model>",
                                        f"model {c.rid!r} is blocked by a bias/drift monitor until cleared"))
        if self._has_residency:
            errors = []
            self._residency(c, reasons, errors)
            if errors:
                return self._errored(reasons, errors)
        if reasons:
            return Outcome("deny", tuple(reasons))
        try:
            allowed = tuple([r.reason for test, r in allows if test is None or test(c)])
        except ConditionError:
            allowed = tuple(self._erroring(allows, c, None))
        if not allowed:
            return Outcome("deny", (DEFAULT_DENY,))
        obligations: list = []
        gate_reasons: list[Reason] = []
        if self.compiled.budgets:
            verdict = self._budgets(c, now, directory, depth, obligations, gate_reasons)
            if verdict is not None:
                return verdict
        gates = self._gates.get(c.action)
        if gates is None:
            gates = self._gates_for(c.action)
        fresh = bool(obligations)  # budget warnings carry this request's numbers
        for gate in gates:
            try:
                applies = gate.when(c)
            except ConditionError as exc:
                text = self._error_text(gate.id, "escalation", exc)
                return self._errored([_errored_reason(gate.reason, text)], [text])
            if applies and not self._approved(c, gate.id, gate.name, gate.role, gate.distinct_approver, directory):
                obligations.append(self._approval_required(gate, now))
                gate_reasons.append(gate.reason)
        if gate_reasons:
            return Outcome("escalate", (*gate_reasons, *allowed), _unique(tuple(obligations)), fresh=fresh)
        return Outcome("allow", allowed, _unique(tuple(obligations)), fresh=fresh)

    @staticmethod
    def _error_text(rule_id: str, what: str, exc: ConditionError) -> str:
        return f"{what} {rule_id}: condition error: {exc.message}"

    def _erroring(self, rules: Tested, c: Ctx, errors: list[str] | None) -> list[Reason]:
        """The slow path once a condition raised: each rule alone; errors collected (deny) or skipped (allow)."""
        matched: list[Reason] = []
        for test, rule in rules:
            try:
                if test is None or test(c):
                    matched.append(rule.reason)
            except ConditionError as exc:
                if errors is not None:
                    text = self._error_text(rule.id, "rule", exc)
                    errors.append(text)
                    matched.append(_errored_reason(rule.reason, text))
        return matched

    @staticmethod
    def _errored(reasons: list[Reason], errors: list[str]) -> Outcome:
        """A deny because a deny/residency/escalation condition could not be decided (fail closed)."""
        return Outcome("deny", tuple(reasons), errors=tuple(errors))

    def _approval_required(self, gate: CompiledGate, now: datetime | None) -> ApprovalRequired:
        """The gate's obligation, deadline to the second; built once per gate and second."""
        epoch = int(time.time() if now is None else utc(now).timestamp())
        key = (gate.key, epoch if gate.within_seconds is not None else None)
        found = self._obligations.get(key)
        if found is None:
            at = None
            if gate.within_seconds is not None:
                at = datetime.fromtimestamp(epoch + gate.within_seconds, timezone.utc).isoformat()
            found = ApprovalRequired(
                gate=gate.id, role=gate.role, deadline_seconds=gate.within_seconds, deadline_at=at,
                on_timeout=gate.on_timeout, distinct_approver=gate.distinct_approver)
            if len(self._obligations) > _CACHE_LIMIT:
                self._obligations.clear()
            self._obligations[key] = found
        return found

    def _gates_for(self, action: str) -> tuple[CompiledGate, ...]:
        gates = tuple(g for g in self.compiled.gates if g.actions is None or action in g.actions)
        if len(self._gates) > _CACHE_LIMIT:
            self._gates.clear()
        self._gates[action] = gates
        return gates

    def _residency(self, c: Ctx, reasons: list[Reason], errors: list[str]) -> None:
        """Deny for every residency that applies to ``c`` and does not allow each region its data reaches.

        Those are ``context.region`` (where the caller computes) and the region a declared model is declared
        in; when neither is known, the resource's ``region``. Both are checked: a ``context.region`` claiming
        an allowed region for a model declared elsewhere must not carry the data there.
        """
        claimed = c.context.get("region")
        reg = c.reg
        declared = reg.get("region") if reg is not None else None
        if claimed is None and declared is None:
            regions: tuple[Any, ...] = (c.rattrs.get("region"),)
        elif claimed is None or declared is None or claimed == declared:
            regions = (declared if claimed is None else claimed,)
        else:
            regions = (claimed, declared)
        for res in self.compiled.residencies:
            try:
                applies = res.when(c)
            except ConditionError as exc:
                text = self._error_text(res.id, "residency", exc)
                errors.append(text)
                reasons.append(_errored_reason(res.reason_base, text))
                continue
            if not applies:
                continue
            for region in regions:
                if region.__class__ is not str or region not in res.regions:
                    shown = repr(region) if region.__class__ is str else "unknown"
                    if len(regions) == 2:
                        shown += (f", where model {c.rid!r} is declared (context.region {claimed!r})"
                                  if region == declared else f" in context.region (model {c.rid!r}: {declared!r})")
                    reasons.append(self._intern(
                        ("residency", res.key, shown), res.id,
                        f"{res.reason_base.message} (compute region {shown}, allowed: {', '.join(sorted(res.regions))})",
                        res.reason_base))
                    break

    def _approved(self, c: Ctx, gate_id: str, gate_name: str, role: str, distinct: bool,
                  directory: Mapping[str, Any] | None) -> bool:
        """Whether an approval names this gate, comes from a holder of ``role`` and, if needed, not the requester.

        With a ``directory`` its roles are authoritative (roles an approval entry
        claims are then ignored, as an agent's claimed roles are); without one,
        the entry's roles count. The requester is the principal and the person
        it acts for (``_requesters``), worked out only when a distinct gate is checked.
        """
        requesters: tuple[str, ...] | None = None
        for gate, approver, roles in c.approvals:
            if gate != gate_id and gate != gate_name:
                continue
            if distinct:
                if requesters is None:
                    requesters = _requesters(c)
                    if not requesters:
                        return False  # a requester without a canonical id cannot be told apart from an approver
                if approver in requesters:
                    continue
            if directory is not None:
                roles = directory.get(approver)
            if not roles or isinstance(roles, str):
                continue
            for held in roles:
                if role in self._role_closure.get(held, ()):
                    return True
        return False

    # --- budgets --------------------------------------------------------------------

    def _budgets_in_scope(self, c: Ctx) -> tuple[CompiledBudget, ...]:
        """The budgets whose scope covers ``c``, cached by the fields that choose them."""
        workflow = c.context.get("workflow")
        key = (workflow if workflow.__class__ is str else None, c.rid if c.kind == "model" else None,
               c.pid if c.ptype == "agent" else None, c.roles)
        found = self._in_scope.get(key)
        if found is None:
            found = tuple(self._scope_budgets(c))
            if len(self._in_scope) >= _CACHE_LIMIT:
                self._in_scope.clear()
            self._in_scope[key] = found
        return found

    def _scope_budgets(self, c: Ctx) -> list[CompiledBudget]:
        by_scope = self.compiled.budgets_by_scope
        found: list[CompiledBudget] = []
        workflow = c.context.get("workflow")
        if workflow.__class__ is str:
            found.extend(by_scope.get(("workflow", workflow), ()))
        if c.kind == "model":
            found.extend(by_scope.get(("model", c.rid), ()))
        if c.ptype == "agent":
            found.extend(by_scope.get(("agent", c.pid), ()))
        for role in c.roles:
            found.extend(by_scope.get(("role", role), ()))
        return found

    def estimate(self, c: Ctx, unit: str) -> float:
        """This request's expected usage in ``unit``: declared tokens/cost, else tokens x price."""
        tokens = _number(c.context.get("tokens")) or 0.0
        if unit == "tokens":
            return float(tokens)
        declared = _number(c.context.get(f"cost_{unit.lower()}"))
        if declared is not None:
            return float(declared)
        reg = c.reg
        if reg is not None and reg.get("currency") == unit:
            return tokens * reg["cost_per_1m_tokens"] / 1_000_000
        return 0.0

    def _budgets(self, c: Ctx, now: datetime | None, directory: Mapping[str, Any] | None, depth: int,
                 obligations: list, gate_reasons: list[Reason]) -> Outcome | None:
        """Check every limit in scope; returns an outcome when a budget decides the request."""
        if c.kind != "model" and c.context.get("tokens") is None and not any(
                k.startswith("cost_") for k in c.context):
            return None  # nothing to spend: budgets do not apply
        in_scope = self._budgets_in_scope(c)
        if not in_scope:
            return None
        tokens = self.estimate(c, "tokens")
        clock = c.now if c.now is not None else time.time()  # epoch seconds: ``now`` or the time, read in ``context``
        hour = int(clock // 3600)
        live = self._live
        if live is not None:
            totals = live.current(hour)
        else:
            bounds = self._windows.at_hour(hour)
            read = self._window_total
        for budget in in_scope:
            if live is not None:
                cells = totals.get(budget.key)
                if cells is None:
                    cells = live.load(totals, hour, budget)
            for i, limit in enumerate(budget.limits):
                est = tokens if limit.unit == "tokens" else self.estimate(c, limit.unit)
                if live is not None:
                    used = cells[i].value + est
                elif read is not None:
                    used = read(budget.scope_key, limit.unit, limit.window, bounds[limit.window][0]) + est
                else:
                    used = self.usage(budget.scope_key, limit.unit, *bounds[limit.window]) + est
                over = used > limit.amount
                if over and budget.on_exceed == "route" and c.kind == "model" and c.rid == budget.target:
                    over = False  # already on the budget's fallback model: exceeding only redirects
                if over:
                    message = (f"budget {budget.id}: {_amount(used)} {limit.unit} {_WINDOW_WORDS[limit.window]} "
                               f"would exceed the limit of {_amount(limit.amount)}")
                    reason = budget.reason_base.model_copy(update={"message": message})
                    if budget.on_exceed == "route" and c.kind == "model" and depth == 0:
                        target = budget.target
                        out = self.decide(c.with_resource(target, self._registry.get(target)), (
                            utc(now) if now is not None else datetime.fromtimestamp(clock, timezone.utc)), directory, 1)
                        rerouted = reason.model_copy(update={"message": f"{message}; rerouted to model {target}"})
                        if out.effect == "deny":
                            return Outcome("deny", (rerouted, *out.reasons), fresh=True, errors=out.errors)
                        return Outcome(out.effect, (rerouted, *out.reasons),
                                       _unique((*obligations, *out.obligations)), target, fresh=True)
                    if budget.on_exceed == "escalate":
                        if not self._approved(c, budget.id, budget.name, budget.target, False, directory):
                            obligations.append(ApprovalRequired(gate=budget.id, role=budget.target))
                            gate_reasons.append(reason)
                        break
                    return Outcome("deny", (reason,), fresh=True)
                if budget.warn_at is not None and used >= limit.amount * budget.warn_at / 100:
                    obligations.append(BudgetWarning(
                        budget=budget.id, used=used, limit=limit.amount, unit=limit.unit,
                        window=limit.window, percent=round(used * 100 / limit.amount, 2) if limit.amount else 100.0))
        return None

    # --- routing ----------------------------------------------------------------------

    def _routed(self, c: Ctx, now: datetime | None, directory: Mapping[str, Any] | None) -> Outcome:
        route = next((r for r in self.compiled.routes if holds(r.when, c)), None)
        if route is None:
            return Outcome("deny", (self._intern(("noroute",), "<request>",
                                                 "resource.id: missing and no route rule matches this request"),))
        collected: list[Reason] = []
        errors: list[str] = []
        for model in route.prefer:
            out = self.decide(c.with_resource(model, self._registry.get(model)), now, directory, 0)
            if out.effect != "deny":
                return Outcome(out.effect, out.reasons, out.obligations, out.route or model, out.fresh, out.errors)
            collected.extend(r.model_copy(update={"candidate": model}) for r in out.reasons)
            errors.extend(out.errors)
        scoped = route.scoped
        head = Reason(rule=route.id, file=recorded(self.compiled.policy_set.file_names, scoped.file), line=scoped.line,
                      message=f"route {route.id}: every candidate ({', '.join(route.prefer)}) is denied")
        return Outcome("deny", (head, *collected), fresh=True, errors=tuple(errors))

    # --- building decisions ---------------------------------------------------------------

    def _intern(self, key: tuple, rule: str, message: str, base: Reason | None = None) -> Reason:
        """A reason built once per distinct content, so decisions carrying it can be cached."""
        reason = self._interned.get(key)
        if reason is None:
            if base is not None:
                reason = base.model_copy(update={"message": message})
            else:
                reason = _builtin(rule, message)
            if len(self._interned) > _CACHE_LIMIT:
                self._interned.clear()
            self._interned[key] = reason
        return reason

    def _decision(self, out: Outcome) -> Decision:
        if out.fresh:
            return make_decision(out.effect, out.reasons, out.obligations, out.route, self.policy_hash, out.errors)
        # every reason and obligation here is built once and kept, so identities name the content
        key = (out.effect, out.route, *map(id, out.reasons))
        if out.obligations:
            key = (*key, None, *map(id, out.obligations))
        decision = self._decisions.get(key)
        if decision is None:
            decision = make_decision(out.effect, out.reasons, out.obligations, out.route, self.policy_hash, ())
            if len(self._decisions) > _CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _deny_builtin(self, rule: str, message: str) -> Decision:
        return make_decision("deny", (_builtin(rule, message),), (), None, self.policy_hash, ())

    def _malformed(self, errors: list[str]) -> Decision:
        reasons = tuple(_builtin("<request>", f"malformed request: {e}") for e in errors)
        return make_decision("deny", reasons, (), None, self.policy_hash, tuple(errors))
