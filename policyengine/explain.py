"""Readable traces of a decision (``policyengine eval --explain``).

This is the slow path, kept apart from ``evaluate``: it walks *every* rule of the
policy, not just the indexed candidates, and says for each whether it matched
and, if not, the first reason why. The decision itself still comes from the
evaluator, so the trace can never disagree with what ``evaluate`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .budgets import utc, window_end, window_start
from .compile import CompiledRule
from .conditions import ConditionError, Ctx, _path_getter, expr_paths, expr_text
from .decision import Decision
from .scoping import file_scopes, scope_words

from .evaluate import _amount

if TYPE_CHECKING:
    from .engine import Explanation
    from .evaluate import Evaluator


def _values(expr: Any, c: Ctx) -> str:
    shown = []
    for path in expr_paths(expr):
        value = _path_getter(path)(c)
        if isinstance(value, frozenset):
            value = sorted(value)
        shown.append(f"{path.dotted} = {'<missing>' if value is None else _shown(value)}")
    return f" ({', '.join(shown)})" if shown else ""


def _shown(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:  # a request value nested past the stack (library callers have no input limit)
        return "<nested too deeply to show>"


def _outside(guard: Any, c: Ctx, scopes: Mapping[Any, Any], decl: Any) -> str | None:
    """Why a scoped declaration does not apply: the request is outside its scope (scoping.py)."""
    if guard is None or guard(c):
        return None
    return f"outside its scope ({scope_words(scopes, decl)}; this request: workflow " \
           f"{c.context.get('workflow', '<none>')!r}, action {c.action!r})"


def _why_not(rule: CompiledRule, c: Ctx, scopes: Mapping[Any, Any]) -> str | None:
    """None when the rule matches, else the first failing part in words."""
    if rule.principal_kind == "role" and rule.principal_name not in c.roles:
        return f"principal does not hold role {rule.principal_name}"
    if rule.principal_kind == "agent" and (c.ptype != "agent" or c.pid != rule.principal_name):
        return f"principal is not agent {rule.principal_name}"
    if "*" not in rule.actions and "any" not in rule.actions and c.action not in rule.actions:
        return f"action {c.action!r} is not {' or '.join(rule.actions)}"
    if rule.kind not in ("*", "any") and rule.kind != c.kind:
        return f"resource kind {c.kind!r} is not {rule.kind}"
    if rule.match_id is not None and not rule.match_id(c.rid):
        return f"resource id {c.rid!r} does not match {rule.scoped.decl.resource_pattern!r}"
    decl = rule.scoped.decl
    outside = _outside(rule.guard, c, scopes, decl)
    if outside is not None:
        return outside
    then = "so this deny rule denies (fail closed)" if rule.effect == "deny" else "so this allow rule does not apply"
    when = _outcome(rule.when, c)
    if when is not True:
        what = "false" if when is False else f"a condition error ({when}), {then}"
        return f"when is {what}: {expr_text(decl.when)}{_values(decl.when, c)}"
    if rule.unless is not None:
        unless = _outcome(rule.unless, c)
        if unless is not False:
            what = "true" if unless is True else f"a condition error ({unless}), {then}"
            return f"unless is {what}: {expr_text(decl.unless)}{_values(decl.unless, c)}"
    return None


def _outcome(pred: Any, c: Ctx) -> bool | str:
    """True or False, or the condition error's message."""
    try:
        return bool(pred(c))
    except ConditionError as exc:
        return exc.message


def _trace_resource(ev: Evaluator, c: Ctx, out: list[str], indent: str, now: datetime | None) -> None:
    cp = ev.compiled
    scopes = file_scopes(cp.policy_set.files)
    for rule in cp.rules:
        where = f"{rule.reason.file}:{rule.reason.line}"
        why = _why_not(rule, c, scopes)
        verdict = f"MATCHED ({rule.effect})" if why is None else f"no match: {why}"
        out.append(f"{indent}rule {rule.id} [{rule.effect}] {where}: {verdict}")
    for res in cp.residencies:
        decl = res.scoped.decl
        state = _outcome(res.when, c)
        outside = _outside(res.guard, c, scopes, decl)
        if outside is not None:
            out.append(f"{indent}residency {res.id}: does not apply: {outside}")
        elif state is True:
            out.append(f"{indent}residency {res.id}: applies; allowed regions {', '.join(sorted(res.regions))}")
        elif state is not False:
            out.append(f"{indent}residency {res.id}: condition error, denies: {state}")
        else:
            out.append(f"{indent}residency {res.id}: does not apply: {expr_text(decl.when)}{_values(decl.when, c)}")
    if c.kind == "model" and c.rid in ev.blocked:
        out.append(f"{indent}model {c.rid} is blocked by a bias/drift monitor")
    for budget in ev._budgets_in_scope(c):
        out.append(f"{indent}budget {budget.id}: covers this request ({budget.scope_key}, on exceed "
                   f"{budget.on_exceed}{' ' + budget.target if budget.target else ''})")
        for limit in budget.limits:
            t = utc(now)  # one clock reading for both ends of the window
            used = ev.usage(budget.scope_key, limit.unit, window_start(limit.window, t), window_end(limit.window, t))
            est = ev.estimate(c, limit.unit)
            out.append(f"{indent}  {limit.unit} per {limit.window}: used {_amount(used)} + this request "
                       f"{_amount(est)} of {_amount(limit.amount)}")
    for gate in cp.gates:
        decl = gate.scoped.decl
        held = _outcome(gate.when, c)
        outside = _outside(gate.guard, c, scopes, decl)
        if outside is not None:
            out.append(f"{indent}escalate {gate.id}: does not match: {outside}")
            continue
        state = "matches" if held is True else "does not match" if held is False else f"condition error, denies ({held})"
        out.append(f"{indent}escalate {gate.id}: {state}: {expr_text(decl.when)}{_values(decl.when, c)}")


def explain(ev: Evaluator, request: Any, *, now: datetime | None = None,
            directory: Mapping[str, Any] | None = None) -> Explanation:
    from .engine import Explanation

    decision = ev.evaluate(request, now=now, directory=directory)
    out: list[str] = []
    c = ev.context(request, now)
    if isinstance(c, Decision):
        out.append("request not decided by rules:")
        out.extend(f"  {r.rule}: {r.message}" for r in c.reasons)
    else:
        out.append(f"request: {c.ptype} {c.pid!r} holding [{', '.join(sorted(c.roles))}] "
                   f"wants to {c.action} {c.kind} {c.rid if c.rid is not None else '<routed>'}")
        if c.rid is None and c.kind == "model":
            for route in ev.compiled.routes:
                decl = route.scoped.decl
                if _outcome(route.when, c) is True:
                    out.append(f"route {route.id}: matches; candidates in order: {', '.join(route.prefer)}")
                    for model in route.prefer:
                        out.append(f"  candidate {model}:")
                        _trace_resource(ev, c.with_resource(model, ev.compiled.registry.get(model)), out, "    ", now)
                        if decision.route == model:
                            break
                    break
                out.append(f"route {route.id}: does not match: {expr_text(decl.when)}{_values(decl.when, c)}")
        else:
            _trace_resource(ev, c, out, "  ", now)
    out.append(f"decision: {decision.effect}" + (f" via route {decision.route}" if decision.route else ""))
    for r in decision.reasons:
        where = f" ({r.file}:{r.line})" if r.file else ""
        cand = f" [candidate {r.candidate}]" if r.candidate else ""
        out.append(f"  because {r.rule}{where}{cand}: {r.message}")
    for o in decision.obligations:
        out.append(f"  obligation: {o.model_dump_json()}")
    return Explanation(decision, tuple(out))
