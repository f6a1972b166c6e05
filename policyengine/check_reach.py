"""Checks of what can take effect: rules that never match, allows a deny always shadows.

Stages of ``check.py``'s checker (they report through it), all warnings:

* ``never-matches``: a rule, residency, escalation or route whose ``when`` is a
  contradiction (``check_logic.contradiction``), or whose ``unless`` holds
  whenever ``when`` does;
* ``shadowed-allow``: an allow that an unconditional deny of the same kind,
  actions and principals (roles closed under ``extends``, an agent's roles)
  always overrides;
* ``denied-candidate``: a route's preferred model that an unconditional
  ``deny any to invoke`` always rejects.

Unconditional denies are indexed by (kind, action) and the literal prefix of
their pattern: a deny can cover an allow only if that prefix starts the allow's
pattern, so the check is not quadratic in the number of rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast
from .check_logic import conjuncts, contradiction, kind_word, literal_prefix, pattern_covers
from .policyset import Scoped

if TYPE_CHECKING:
    from .check import _Checker

_DenyIndex = dict[tuple[str, str], dict[str, list[Scoped]]]


def check_never_match(checker: _Checker) -> None:
    for s in checker.each(ast.RuleDecl):
        _never(checker, s, s.decl.when, s.decl.unless)
    for kind in (ast.ResidencyDecl, ast.EscalateDecl, ast.RouteDecl):
        for s in checker.each(kind):
            _never(checker, s, s.decl.when, None)


def _never(checker: _Checker, s: Scoped, when: ast.Expr | None, unless: ast.Expr | None) -> None:
    kind, name = kind_word(s.decl), s.decl.name.value
    resolve = lambda ref: checker.lookup_const(s.package, ref, report=False)  # noqa: E731
    if when is not None:
        found = contradiction(when, resolve)
        if found is not None:
            span, why = found
            checker.warn("never-matches", f"{kind} '{name}' can never match: {why}", span,
                         "remove the contradiction or the whole rule")
            return
    if unless is not None:
        always = isinstance(unless, ast.Literal) and unless.value is True
        if always:
            why = "'unless true' excludes every request"
        elif when is not None and unless == when:
            why = "'unless' repeats 'when'"
        elif when is not None and set(conjuncts(unless)) <= set(conjuncts(when)):
            why = "whenever 'when' holds, 'unless' holds too"
        else:
            return
        checker.warn("never-matches", f"{kind} '{name}' can never match: {why}", unless.span)


def check_shadowing(checker: _Checker) -> None:
    index: _DenyIndex = {}
    for d in checker.each(ast.RuleDecl):
        deny = d.decl
        if deny.effect == "deny" and deny.when is None and deny.unless is None \
                and deny.applies is None and deny.span not in checker.file_scopes:  # a scope is a condition too
            prefix = literal_prefix(deny.resource_pattern)
            for action in deny.actions:
                index.setdefault((deny.resource_kind.value, action.value), {}).setdefault(prefix, []).append(d)
    if not index:
        return
    _always_denied_candidates(checker, index)
    for s in checker.each(ast.RuleDecl):
        allow = s.decl
        if allow.effect != "allow" or not allow.actions:
            continue
        d = _shadowing_deny(checker, allow, index)
        if d is not None:
            checker.warn("shadowed-allow", f"allow '{allow.name.value}' never takes effect: rule '{d.id}' "
                         "always denies what it allows", allow.name.span,
                         f"the deny is at {d.decl.name.span}; give it a 'when' or narrow one of the two")


def _always_denied_candidates(checker: _Checker, index: _DenyIndex) -> None:
    """Route candidates that an unconditional ``deny any to invoke model`` always rejects."""
    for s in checker.each(ast.RouteDecl):
        for model in s.decl.prefer:
            for action in ("*", "invoke"):
                buckets = index.get(("model", action), {})
                found = [d for end in range(len(model.value) + 1) for d in buckets.get(model.value[:end], ())
                         if d.decl.principal.kind == "any" and pattern_covers(d.decl.resource_pattern, model.value)]
                if found:
                    checker.warn("denied-candidate", f"route '{s.decl.name.value}' prefers model '{model.value}', "
                                 f"but rule '{found[0].id}' always denies invoking it", model.span,
                                 f"the deny is at {found[0].decl.name.span}; remove the candidate or narrow the deny")
                    break


def _shadowing_deny(checker: _Checker, allow: ast.RuleDecl, index: _DenyIndex) -> Scoped | None:
    pattern = allow.resource_pattern
    for action in ("*", allow.actions[0].value):
        buckets = index.get((allow.resource_kind.value, action), {})
        for end in range(len(pattern) + 1):
            for d in buckets.get(pattern[:end], ()):
                deny = d.decl
                if (pattern_covers(deny.resource_pattern, pattern)
                        and _actions_cover(deny.actions, allow.actions)
                        and _principal_covers(checker, deny.principal, allow.principal)):
                    return d
    return None


def _principal_covers(checker: _Checker, deny: ast.PrincipalMatch, allow: ast.PrincipalMatch) -> bool:
    if deny.kind == "any":
        return True
    if deny.name is None or allow.name is None:
        return False
    if deny.kind == allow.kind:
        if deny.kind == "agent":
            return deny.name.value == allow.name.value
        return deny.name.value in checker.role_closure.get(allow.name.value, {allow.name.value})
    if deny.kind == "role" and allow.kind == "agent" and allow.name.value in checker.agents:
        held: set[str] = set()
        for role in checker.agents[allow.name.value].decl.roles:
            held |= checker.role_closure.get(role.value, {role.value})
        return deny.name.value in held
    return False


def _actions_cover(deny: tuple[ast.Name, ...], allow: tuple[ast.Name, ...]) -> bool:
    names = {a.value for a in deny}
    return "*" in names or all(a.value in names for a in allow)
