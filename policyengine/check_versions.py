"""Checks of version names in conditions: a version no declared model or agent has.

A stage of ``check.py``'s checker (it reports through it). The version a request
uses is resolved into ``resource.version`` (``principal.version`` for an agent)
before it is decided (``models_registry.stamp``), always as one of the versions
the rules declare. So a condition comparing it with any other string can never
hold (``==``, ``in``) or always does (``!=``, ``not in``): a typo, or a version
that was removed from the ``version`` list. Reported here:

* ``unknown-version``: ``resource.version`` or ``principal.version`` (also
  ``.attrs.version``) compared with a string that is not a declared version of
  what the condition is about: the rule's target (``invoke model "small"``,
  ``allow agent scorer``; a pattern: every model it matches), else (escalate,
  route, residency, a target of another kind) every model and agent that
  declares versions, and nothing is checked when none does.

Aliases (``resource.alias``) are not checked: an alias is any name
``models promote --alias`` gives, kept in the audit log, not in the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ast
from .diagnostics import suggest
from .globs import glob_match

if TYPE_CHECKING:
    from .check import _Checker

_VERSION_PARTS = (("version",), ("attrs", "version"))
_OPS = ("==", "!=", "in", "not in")


def check_versions(checker: _Checker) -> None:
    for scoped in checker.each(ast.RuleDecl):
        for expr in (scoped.decl.when, scoped.decl.unless):
            if expr is not None:
                _condition(checker, scoped.package, scoped.decl, expr)
    for kind in (ast.EscalateDecl, ast.RouteDecl, ast.ResidencyDecl):
        for scoped in checker.each(kind):
            if scoped.decl.when is not None:
                _condition(checker, scoped.package, scoped.decl, scoped.decl.when)


def _condition(checker: _Checker, pkg: str, decl: Any, expr: ast.Expr) -> None:
    if isinstance(expr, (ast.And, ast.Or)):
        for item in expr.items:
            _condition(checker, pkg, decl, item)
    elif isinstance(expr, ast.Not):
        _condition(checker, pkg, decl, expr.operand)
    elif isinstance(expr, ast.Compare) and expr.op in _OPS:
        for path, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if isinstance(path, ast.Path) and path.root in ("resource", "principal") and path.parts in _VERSION_PARTS:
                _compared(checker, pkg, decl, path, other)


def _compared(checker: _Checker, pkg: str, decl: Any, path: ast.Path, other: ast.Expr) -> None:
    about = _about(checker, decl, path.root)
    if about is None:
        return
    what, versions = about
    for value, span in _strings(checker, pkg, other):
        if value in versions:
            continue
        fix = suggest(value, versions) or (f"declare it: version {', '.join(map(_quoted, (*versions, value)))}"
                                           if versions else f"declare its versions: version {_quoted(value)}")
        checker.report("unknown-version", f"{_kind(decl)} '{decl.name.value}': {path.dotted} is compared with "
                                          f"{_quoted(value)}, which is not a declared version of {what} "
                                          f"(declared: {', '.join(versions) or 'none'})", span, help=fix)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _about(checker: _Checker, decl: Any, root: str) -> tuple[str, tuple[str, ...]] | None:
    """What the condition's ``root.version`` is a version of, and its declared versions; None: not checked."""
    tables = {"model": checker.models, "agent": checker.agents}
    if isinstance(decl, ast.RuleDecl):
        if root == "resource" and decl.resource_kind.value in tables:
            kind = decl.resource_kind.value
            table, pattern = tables[kind], decl.resource_pattern
            matched = [s.decl for name, s in table.items() if glob_match(pattern, name)]
            if not matched:
                return None  # an unknown target is reported with the other references
            what = f"{kind} '{pattern}'" if len(matched) == 1 and matched[0].name.value == pattern else (
                f"any {kind} matching '{pattern}'")
            return what, _union(matched)
        if root == "principal" and decl.principal.kind == "agent" and decl.principal.name is not None:
            agent = checker.agents.get(decl.principal.name.value)
            if agent is None:
                return None
            return f"agent '{agent.decl.name.value}'", tuple(agent.decl.versions)
    pool = [s.decl for s in checker.agents.values()]
    if root == "resource":
        pool += [s.decl for s in checker.models.values()]
    versions = _union(pool)
    if not versions:
        return None  # nothing declares versions: this ``version`` is some other attribute
    return ("any model or agent" if root == "resource" else "any agent"), versions


def _union(decls: list[Any]) -> tuple[str, ...]:
    """Every version the declarations list, in declaration order, once."""
    return tuple(dict.fromkeys(v for d in decls for v in d.versions))


def _strings(checker: _Checker, pkg: str, expr: ast.Expr) -> list[tuple[str, Any]]:
    """The string literals ``expr`` is or lists, each with the span to point at (a const: where it is used)."""
    if isinstance(expr, ast.ConstRef):
        value = checker.lookup_const(pkg, expr, report=False)
        return [(text, expr.span) for text, _ in _strings(checker, pkg, value)] if value is not None else []
    if isinstance(expr, ast.ListExpr):
        return [found for item in expr.items for found in _strings(checker, pkg, item)]
    if isinstance(expr, ast.Literal) and isinstance(expr.value, str):
        return [(expr.value, expr.span)]
    return []


def _kind(decl: Any) -> str:
    return type(decl).__name__.removesuffix("Decl").lower()
