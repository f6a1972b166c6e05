"""Where declarations apply: package scopes, ``applies to`` clauses and qualified roles.

A file's ``scope workflow "invoices"`` header bounds every rule, residency and
escalation of that file; a declaration's ``applies to ...`` narrows it further.
Both are compiled into one *guard* per declaration: a predicate over the
request that never raises (a request without ``context.workflow`` is simply
outside a workflow scope, so a scoped deny does not fail closed on requests
of other packages) and is tested before the declaration's own condition.

A request is in a scope when its ``context.workflow`` is one of the scope's
workflows (when it names any) and its action one of its actions (when it names
any). With a file scope and a declaration scope, both must hold.

Roles may be package-qualified: ``role finance.analyst`` in package
``finance.invoices`` (the qualifier is the package or one of its parents) is a
role of its own, written in full wherever it is used, requests included.
``role_findings`` reports ``role-name``, ``role-collision`` and
``ambiguous-role`` for ``check``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import ast
from .conditions import Ctx, Pred
from .diagnostics import Finding, Severity, Span

Guard = Pred

# --- scopes ---------------------------------------------------------------------------


def file_scopes(files: Iterable[ast.PolicyFile]) -> dict[Span, ast.Scope]:
    """``decl.span -> its file's scope`` for every declaration of a scoped file.

    Keyed by where the declaration is written, not by the object: the checker
    replaces a rule whose head names an action group by a copy listing the
    actions, and the copy is in the same file, under the same scope.
    """
    return {decl.span: f.scope for f in files if f.scope is not None for decl in f.decls}


def effective(file_scope: ast.Scope | None, decl_scope: ast.Scope | None) -> tuple[frozenset[str] | None, ...]:
    """``(workflows, actions)`` a declaration applies to (None: no bound), file and declaration intersected."""
    bounds: list[frozenset[str] | None] = []
    for kind in ("workflows", "actions"):
        found: frozenset[str] | None = None
        for scope in (file_scope, decl_scope):
            names = getattr(scope, kind) if scope is not None else ()
            if names:
                values = frozenset(n.value for n in names)
                found = values if found is None else found & values
        bounds.append(found)
    return tuple(bounds)


def scope_guard(workflows: frozenset[str] | None, actions: frozenset[str] | None) -> Guard | None:
    """A predicate that holds for requests inside the bounds; None when there are none."""
    if workflows is None and actions is None:
        return None
    if workflows is None:
        return lambda c: c.action in actions  # type: ignore[operator]

    def in_workflow(c: Ctx) -> bool:
        workflow = c.context.get("workflow")
        if workflow.__class__ is not str or workflow not in workflows:
            return False
        return actions is None or c.action in actions

    return in_workflow


def guard_for(scopes: Mapping[Span, ast.Scope], decl: Any) -> Guard | None:
    """The guard of a rule, residency or escalation (its file's scope and its ``applies to``)."""
    return scope_guard(*effective(scopes.get(decl.span), getattr(decl, "applies", None)))


def guarded(guard: Guard | None, pred: Pred | None) -> Pred | None:
    """``pred`` tested only inside the guard (None: ``pred`` always holds)."""
    if guard is None:
        return pred
    if pred is None:
        return guard
    return lambda c: guard(c) and pred(c)


def scope_words(scopes: Mapping[Span, ast.Scope], decl: Any) -> str:
    """The scope in words, for explanations: ``workflow 'a' and action read``."""
    workflows, actions = effective(scopes.get(decl.span), getattr(decl, "applies", None))
    parts = []
    if workflows is not None:
        parts.append("workflow " + " or ".join(repr(w) for w in sorted(workflows)))
    if actions is not None:
        parts.append("action " + " or ".join(sorted(actions)))
    return " and ".join(parts) or "every request"


# --- qualified roles -------------------------------------------------------------------


def qualifier(role: str) -> str | None:
    """``finance`` for ``finance.analyst``; None for a global (shared) role."""
    head, dot, _ = role.rpartition(".")
    return head if dot else None


def _within(package: str, prefix: str) -> bool:
    return package == prefix or package.startswith(prefix + ".")


def role_findings(roles: Iterable[tuple[str, ast.RoleDecl]],
                  references: Iterable[tuple[str, ast.Name]]) -> list[Finding]:
    """``role-name``, ``role-collision`` and ``ambiguous-role`` findings.

    ``roles``: (package, declaration) of every role declared, duplicates included;
    ``references``: (package, name) of every place a role is named.
    """
    declared: dict[str, list[tuple[str, ast.RoleDecl]]] = {}
    findings: list[Finding] = []
    for package, decl in roles:
        name = decl.name.value
        declared.setdefault(name, []).append((package, decl))
        prefix = qualifier(name)
        if prefix is not None and not _within(package, prefix):
            findings.append(Finding(
                "role-name", f"role '{name}' is qualified by '{prefix}', which is not package {package} "
                f"or one of its parents", decl.name.span, Severity.ERROR,
                f"declare it in package {prefix} (or below), or write 'role {package.split('.')[0]}."
                f"{name.rpartition('.')[2]}'"))
    for name, found in declared.items():
        packages = list(dict.fromkeys(p for p, _ in found))
        if qualifier(name) is None and len(packages) > 1:
            first_pkg, first = found[0]
            for package, decl in found[1:]:
                if package != first_pkg:
                    findings.append(Finding(
                        "role-collision", f"role '{name}' is declared by packages {first_pkg} and {package}",
                        decl.name.span, Severity.ERROR,
                        f"a role of one package: write 'role {package.split('.')[0]}.{name}' and use it in full; "
                        f"a shared role: declare it once, in a common package (first at {first.name.span})"))
                    break
    by_base: dict[str, list[str]] = {}
    for name in declared:
        if qualifier(name) is not None:
            by_base.setdefault(name.rpartition(".")[2], []).append(name)
    for package, ref in references:
        if qualifier(ref.value) is not None or ref.value not in by_base:
            continue
        own = [q for q in by_base[ref.value] if _within(package, qualifier(q) or "")]
        if ref.value in declared and own:
            findings.append(Finding(
                "ambiguous-role", f"role '{ref.value}' is the shared role, but package {package} declares "
                f"'{own[0]}'", ref.span, Severity.WARNING,
                f"write '{own[0]}' for the package's role; the shared role keeps its bare name"))
        elif ref.value not in declared:
            choices = sorted(by_base[ref.value])
            findings.append(Finding(
                "ambiguous-role", f"role '{ref.value}' is only declared package-qualified: "
                f"{', '.join(choices)}", ref.span, Severity.ERROR,
                f"write the role in full: {' or '.join(repr(c) for c in choices)}"))
    return findings


def role_references(files: Iterable[ast.PolicyFile]) -> list[tuple[str, ast.Name]]:
    """(package, name) of every place the files name a role (rules, extends, agents, gates, budgets, monitors)."""
    found: list[tuple[str, ast.Name]] = []
    for f in files:
        package = f.package.value
        for decl in f.decls:
            names: tuple[ast.Name, ...] = ()
            if isinstance(decl, ast.RoleDecl):
                names = decl.extends
            elif isinstance(decl, ast.AgentDecl):
                names = decl.roles
            elif isinstance(decl, ast.RuleDecl) and decl.principal.kind == "role" and decl.principal.name:
                names = (decl.principal.name,)
            elif isinstance(decl, ast.EscalateDecl):
                names = (decl.role,)
            elif isinstance(decl, ast.BudgetDecl):
                if decl.scope.kind == "role":
                    names = (ast.Name(decl.scope.value, span=decl.scope.span),)
                if isinstance(decl.on_exceed, ast.EscalateAction):
                    names = (*names, decl.on_exceed.role)
            elif isinstance(decl, (ast.BiasDecl, ast.DriftDecl)) and isinstance(decl.on_breach, ast.EscalateAction):
                names = (decl.on_breach.role,)
            found.extend((package, name) for name in names)
    return found


def check_roles(files: Iterable[ast.PolicyFile]) -> list[Finding]:
    """The role findings of ``check`` for a set of parsed files."""
    files = tuple(files)
    roles = [(f.package.value, d) for f in files for d in f.decls if isinstance(d, ast.RoleDecl)]
    return role_findings(roles, role_references(files))


def ambiguous_names(files: Iterable[ast.PolicyFile]) -> frozenset[str]:
    """Bare role names that only exist package-qualified (``check`` reports them as ``ambiguous-role``)."""
    declared = {d.name.value for f in files for d in f.decls if isinstance(d, ast.RoleDecl)}
    return frozenset(n.rpartition(".")[2] for n in declared if qualifier(n) is not None) - declared
