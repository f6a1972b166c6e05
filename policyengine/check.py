"""Static checks: from parsed files to a checked ``PolicySet`` plus findings.

The checker resolves names across the whole set (roles, agents and models are one
namespace; rules and the other named declarations are ``package.name``; consts are
per package and visible to importers), closes roles under ``extends``, substitutes
consts, and then looks for the mistakes an author makes: unknown names, cycles,
duplicates, type mismatches, out-of-range values, rules that can never match and
allows that a deny always shadows. It never stops at the first problem and never
raises: every finding is collected, sorted by position and capped, and the policy
set is only handed on when there is no error.
"""

from __future__ import annotations

import re

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from . import ast
from .check_routing import check_traffic
from .check_logic import GLOB_CHARS, contradiction, kind_word, pattern_covers, show
from .check_reach import check_never_match, check_shadowing
from .check_values import check_values
from .check_versions import check_versions
from .diagnostics import Finding, Severity, Span, sort_findings, suggest
from .format import format_name
from .globs import has_glob, pattern_problem
from .policyset import PolicySet, Scoped
from .schema import attribute_key
from .scoping import ambiguous_names, check_roles, file_scopes, qualifier

__all__ = ["MAX_FINDINGS", "CheckResult", "check_policy", "contradiction", "pattern_covers", "show", "suggest"]

MAX_FINDINGS = 100
RESOURCE_KINDS = ("model", "dataset", "tool", "agent", "workflow")
# the values a request's built-in attributes can have (any other is malformed): compared with another, never true
_BUILT_IN_VALUES = {"principal.type": ("user", "agent"), "resource.kind": RESOURCE_KINDS}
SCALAR_ROOTS = frozenset({"action", "outcome"})  # plain strings: no dotted attributes
AUDIT_ROOTS = frozenset({"subject", "outcome", "output"})  # read from the audit trail, not requests

# Named declarations identified as ``package.name``, and the PolicySet field each fills.
_PACKAGE_SCOPED = {
    ast.RuleDecl: "rules",
    ast.ResidencyDecl: "residencies",
    ast.BudgetDecl: "budgets",
    ast.EscalateDecl: "escalations",
    ast.RouteDecl: "routes",
    ast.BiasDecl: "biases",
    ast.DriftDecl: "drifts",
    ast.SchemaDecl: "schemas",
}


_SINGLE_STAR = re.compile(r"(?<!\*)\*(?!\*)")  # a '*' that is not part of '**'


@dataclass(frozen=True)
class CheckResult:
    """What ``check`` found: the policy set (None when any error) and every finding."""

    policy: PolicySet | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_error]

    @property
    def ok(self) -> bool:
        return self.policy is not None


def check_policy(files: Sequence[ast.PolicyFile]) -> CheckResult:
    """Check ``files`` as one policy set; never raises, collects every finding."""
    checker = _Checker(tuple(files))
    policy = checker.run()
    findings = sort_findings(list(dict.fromkeys(checker.findings)))
    if len(findings) > MAX_FINDINGS:
        # errors first, so a flood of warnings never hides why the set was rejected
        shown = sort_findings(sorted(findings, key=lambda f: not f.is_error)[:MAX_FINDINGS])
        last = shown[-1]
        message = f"{len(findings) - MAX_FINDINGS} more finding(s) not shown; fix the ones above first"
        findings = [*shown, Finding("too-many-findings", message, last.span, Severity.WARNING)]
    return CheckResult(policy, findings)


def _kind_of_value(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


_ARTICLE = {"string": "a string", "number": "a number", "bool": "a boolean", "list": "a list",
            "duration": "a duration", "record": "a record"}
_TIME_KINDS = {"hour": "number", "weekday": "string", "age": "duration"}


class _Checker:
    """One run over one set of files; mutable only while it runs."""

    def __init__(self, files: tuple[ast.PolicyFile, ...]):
        self.files = files
        self.findings: list[Finding] = []
        self.packages: dict[str, list[ast.PolicyFile]] = {}
        self.roles: dict[str, Scoped[ast.RoleDecl]] = {}
        self.agents: dict[str, Scoped[ast.AgentDecl]] = {}
        self.models: dict[str, Scoped[ast.ModelDecl]] = {}
        self.scoped: dict[str, list[Scoped]] = {name: [] for name in _PACKAGE_SCOPED.values()}
        self.const_decls: dict[str, dict[str, ast.ConstDecl]] = {}
        self.imports: dict[str, list[str]] = {}
        self.role_closure: dict[str, frozenset[str]] = {}
        self.by_kind: dict[type, list[Scoped]] = {}
        self._resolved: dict[tuple[str, str], ast.Expr | None] = {}
        self._resolving: list[tuple[str, str]] = []
        self._hints: dict[tuple[str, str], str] = {}
        # request attributes declared by schemas: canonical key -> (type word for comparisons, enum values, steps)
        self.attr_kinds: dict[tuple[str, tuple[str, ...]], str] = {}
        self.attr_enums: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        self.attr_timestamps: set[tuple[str, tuple[str, ...]]] = set()
        self.attr_normal: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self.ambiguous = ambiguous_names(files)  # bare names of package-qualified roles only
        self.file_scopes = file_scopes(files)  # decl.span -> its file's ``scope`` header

    # -- plumbing -----------------------------------------------------------------

    def report(self, code: str, message: str, span: Span, help: str | None = None,
               severity: Severity = Severity.ERROR) -> None:
        self.findings.append(Finding(code, message, span, severity, help))

    def warn(self, code: str, message: str, span: Span, help: str | None = None) -> None:
        self.report(code, message, span, help, Severity.WARNING)

    def run(self) -> PolicySet | None:
        stages: tuple[tuple[str, Callable[[], None]], ...] = (
            ("index declarations", self.index),
            ("resolve imports", self.check_imports),
            ("close roles", self.close_roles),
            ("check role names", lambda: self.findings.extend(check_roles(self.files))),
            ("resolve consts", self.resolve_all_consts),
            ("expand action groups", self.expand_action_groups),
            ("find action groups in scopes", self.check_scope_actions),
            ("compare action names", self.check_action_case),
            ("check schemas", self.check_schemas),
            ("check masks", self.check_masks),
            ("check references", self.check_references),
            ("check expressions", self.check_expressions),
            ("check values", lambda: check_values(self)),
            ("find rules that never match", lambda: check_never_match(self)),
            ("find shadowed allows", lambda: check_shadowing(self)),
            ("check routes and rate limits", lambda: check_traffic(self)),
            ("check version names", lambda: check_versions(self)),
        )
        for label, stage in stages:
            try:
                stage()
            except Exception as exc:  # a checker bug must not become a traceback
                span = self.files[0].span if self.files else Span("<none>", 1, 1, 1, 1)
                self.report("internal-error", f"checker failed to {label}: {exc!r}", span)
        if any(f.is_error for f in self.findings):
            return None
        return self.build()

    def build(self) -> PolicySet:
        consts = {pkg: self.visible_consts(pkg) for pkg in self.packages}
        cites: dict[str, tuple[str, ...]] = {}
        for pkg, files in self.packages.items():
            cites[pkg] = tuple(dict.fromkeys(c for f in files for c in f.cites))
        return PolicySet(files=self.files, roles=dict(self.roles), role_closure=dict(self.role_closure),
                         agents=dict(self.agents), models=dict(self.models), consts=consts, package_cites=cites,
                         masks=tuple(self.each(ast.MaskDecl)), actions=frozenset(self._named_actions()),
                         **{name: tuple(items) for name, items in self.scoped.items()})

    def each(self, kind: type) -> list[Scoped]:
        """Every declaration of ``kind`` (duplicates included), in file order."""
        return self.by_kind.get(kind, [])

    # -- stage: index every declaration, report duplicates --------------------------

    def index(self) -> None:
        ids: dict[tuple[str, str], ast.Decl] = {}
        for f in self.files:
            pkg = f.package.value
            self.packages.setdefault(pkg, []).append(f)
            self.const_decls.setdefault(pkg, {})
            imports = self.imports.setdefault(pkg, [])
            for imp in f.imports:
                if imp.package.value not in imports:
                    imports.append(imp.package.value)
            for decl in f.decls:
                scoped = Scoped(pkg, decl)
                self.by_kind.setdefault(type(decl), []).append(scoped)
                if isinstance(decl, ast.MaskDecl):
                    continue  # unnamed: checked in check_masks
                name = decl.name
                if isinstance(decl, (ast.RoleDecl, ast.AgentDecl, ast.ModelDecl)):
                    table = self.roles if isinstance(decl, ast.RoleDecl) else (
                        self.agents if isinstance(decl, ast.AgentDecl) else self.models)
                    if name.value in table:
                        if not (isinstance(decl, ast.RoleDecl) and table[name.value].package != pkg
                                and qualifier(name.value) is None):  # else role-collision (scoping.py)
                            self._duplicate(decl, table[name.value].decl, "in the policy set")
                    else:
                        clash = next((s for n, s in table.items() if n.casefold() == name.value.casefold()), None)
                        if clash is not None:  # requests spelling either would be refused as ambiguous
                            self.report("name-case", f"{kind_word(decl)} '{name.value}' differs only in case from "
                                        f"'{clash.decl.name.value}'", name.span,
                                        f"names are exact and requests that differ only in case are refused; "
                                        f"rename one (first at {clash.decl.name.span})")
                        table[name.value] = scoped
                elif isinstance(decl, ast.ConstDecl):
                    consts = self.const_decls[pkg]
                    if name.value in consts:
                        self._duplicate(decl, consts[name.value], f"in package {pkg}")
                    else:
                        consts[name.value] = decl
                else:
                    key = (pkg, name.value)
                    if key in ids:
                        self._duplicate(decl, ids[key], f"in package {pkg}")
                    else:
                        ids[key] = decl
                        self.scoped[_PACKAGE_SCOPED[type(decl)]].append(scoped)

    def _duplicate(self, decl: ast.Decl, first: ast.Decl, where: str) -> None:
        self.report("duplicate-name", f"{kind_word(decl)} '{decl.name.value}' is declared twice {where}",
                    decl.name.span, f"first declared as {kind_word(first)} at {first.name.span}; rename one of them")

    # -- stage: masks ----------------------------------------------------------------

    def check_masks(self) -> None:
        """A mask names a request field and hash or drop, once in the policy set.

        A field no schema declares and no rule reads is fine: masking is about
        what requests carry, not about what the rules read.
        """
        from .audit.masking import MASK_ACTIONS, MASK_ROOTS, request_pointer

        seen: dict[str, ast.MaskDecl] = {}
        for s in self.each(ast.MaskDecl):
            decl: ast.MaskDecl = s.decl
            path = decl.path
            pointer = None
            if isinstance(path, ast.Path) and path.root in MASK_ROOTS and path.parts:
                pointer = request_pointer(path.root, path.parts)
            else:
                written = path.dotted if isinstance(path, ast.Path) else path.name
                self.report("mask-path", f"'{written}' is not a request field a mask can name", path.span,
                            f"write the field under {', '.join(MASK_ROOTS)}, as in: mask data.customer.email hash")
            if decl.action.value not in MASK_ACTIONS:
                self.report("mask-action", f"a mask hashes or drops its field, not '{decl.action.value}'",
                            decl.action.span, suggest(decl.action.value, MASK_ACTIONS) or "write hash or drop")
            if pointer is None:
                continue
            first = seen.get(pointer)
            if first is not None:
                self.report("duplicate-mask", f"'{path.dotted}' is masked twice in the policy set ({pointer})",
                            path.span, f"first masked at {first.path.span}; keep one mask per field")
            else:
                seen[pointer] = decl

    # -- stage: request schemas -------------------------------------------------------

    def _enum_values(self, pkg: str, values: ast.Expr | None) -> tuple[str, ...] | None:
        """The strings of an enum's list (consts resolved), or None after reporting what is wrong."""
        expr = self.lookup_const(pkg, values) if isinstance(values, ast.ConstRef) else values
        items: list[str] = []
        for item in expr.items if isinstance(expr, ast.ListExpr) else ():
            item = self.lookup_const(pkg, item, report=False) if isinstance(item, ast.ConstRef) else item
            if isinstance(item, ast.ListExpr):
                items.extend(i.value for i in item.items if isinstance(i, ast.Literal) and isinstance(i.value, str))
            elif isinstance(item, ast.Literal) and isinstance(item.value, str):
                items.append(item.value)
            else:
                items = []
                break
        if not items and values is not None:
            self.report("type-mismatch", "an enum lists its values as quoted strings", values.span,
                        'write enum ["active", "sanctioned"]')
            return None
        return tuple(items)

    def check_schemas(self) -> None:
        seen: dict[tuple[str, tuple[str, ...]], tuple[tuple, ast.SchemaAttribute]] = {}
        for s in self.each(ast.SchemaDecl):
            for attr in s.decl.attributes:
                key = attribute_key(attr.path)
                if key is None:
                    self.report("schema-attribute", f"'{attr.path.dotted}' cannot be declared in a schema",
                                attr.path.span, "declare attributes under data, context, principal or resource "
                                "(principal id, type, roles and resource id, kind are built in)")
                    continue
                values = self._enum_values(s.package, attr.values) if attr.type == "enum" else ()
                for step in attr.normalise:
                    if step.value not in ast.NORMALISATIONS:
                        self.report("unknown-normalisation", f"unknown normalisation '{step.value}'", step.span,
                                    suggest(step.value, ast.NORMALISATIONS)
                                    or "normalisations are " + ", ".join(ast.NORMALISATIONS))
                if attr.normalise and attr.type in ("number", "bool"):
                    self.report("type-mismatch", f"a {attr.type} has no text to normalise", attr.normalise[0].span,
                                "normalise string, enum, timestamp or set of string attributes")
                self._bounds(attr)
                signature = (attr.type, values, tuple(n.value for n in attr.normalise), (attr.minimum, attr.maximum))
                if key in seen and (seen[key][0][0], *seen[key][0][2:]) != (signature[0], *signature[2:]):
                    first = seen[key][1]
                    self.report("schema-conflict", f"'{attr.path.dotted}' is declared again with another type, "
                                "normalisation or bounds", attr.span, f"first declared at {first.span}; declare it "
                                "the same way in every schema")
                    continue
                seen.setdefault(key, (signature, attr))
                self.attr_kinds[key] = {"number": "number", "bool": "bool", "set": "list"}.get(attr.type, "string")
                if attr.type == "timestamp":
                    self.attr_timestamps.add(key)
                self.attr_normal[key] = signature[2]
                if attr.type == "enum" and values:
                    self.attr_enums[key] = self.attr_enums.get(key, frozenset()) | frozenset(values)

    def _bounds(self, attr: ast.SchemaAttribute) -> None:
        """``min``/``max`` bound numbers only, and must leave some number in range."""
        low, high = attr.minimum, attr.maximum
        if (low is None and high is None) or attr.bounds_span is None:
            return
        if attr.type != "number":
            self.report("type-mismatch", f"'min' and 'max' bound numbers, not a {attr.type}", attr.bounds_span,
                        "declare the attribute as a number, or drop the bound")
        elif low is not None and high is not None and low > high:
            self.report("empty-range", f"min {low:g} is above max {high:g}: no value would be accepted",
                        attr.bounds_span, "swap the two bounds")

    # -- stage: imports -------------------------------------------------------------

    def check_imports(self) -> None:
        for f in self.files:
            for imp in f.imports:
                target = imp.package.value
                if target not in self.packages:
                    self.report("unresolved-import", f"no file declares package '{target}'", imp.package.span,
                                suggest(target, self.packages) or "check the package name and the paths given to check")

    # -- stage: roles ----------------------------------------------------------------

    def close_roles(self) -> None:
        for scoped in self.each(ast.RoleDecl):
            for parent in scoped.decl.extends:
                self.role_ref(parent)
        reported: set[frozenset[str]] = set()
        for name in self.roles:
            self.role_closure[name] = self._closure(name, [], reported)

    def _closure(self, name: str, stack: list[str], reported: set[frozenset[str]]) -> frozenset[str]:
        if name in self.role_closure:
            return self.role_closure[name]
        held = {name}
        for parent in self.roles[name].decl.extends:
            if parent.value not in self.roles:
                continue
            if parent.value in stack or parent.value == name:
                cycle = [*stack[stack.index(parent.value) :], name] if parent.value in stack else [name]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    path = " -> ".join([*cycle, parent.value])
                    self.report("extends-cycle", f"roles extend each other in a cycle: {path}", parent.span,
                                "remove one of the 'extends' links so inheritance runs one way")
                held.update(cycle)
                continue
            held |= self._closure(parent.value, [*stack, name], reported)
        return frozenset(held)

    # -- stage: consts ------------------------------------------------------------------

    def resolve_all_consts(self) -> None:
        for pkg, consts in self.const_decls.items():
            for name in consts:
                self._resolve_declared(pkg, name)

    def expand_action_groups(self) -> None:
        """``allow ... to READ_ACTIONS dataset``: an action that names a visible const is that list of actions.

        The rule is replaced by one listing the actions (so everything after the
        checker sees plain actions); the file keeps the name as written.
        """
        known: set[str] | None = None  # worked out at the first group met (most policies have none)
        for i, s in enumerate(self.scoped.get("rules", [])):
            rule = s.decl
            visible = self.visible_consts(s.package)
            if not any(a.value in visible for a in rule.actions):
                continue
            actions: list[ast.Name] = []
            for action in rule.actions:
                group = visible.get(action.value)
                if group is None:
                    actions.append(action)
                    continue
                items = group.items if isinstance(group, ast.ListExpr) else (group,)
                names = [item.value for item in items if isinstance(item, ast.Literal)]
                if len(names) != len(items) or not all(isinstance(n, str) and ast.ACTION_NAME.fullmatch(n)
                                                       for n in names):
                    self.report("type-mismatch", f"'{action.value}' is used as a group of actions, but its value "
                                f"{show(group)} is not a list of action names", action.span,
                                'declare it as const NAME = ["read", "list"]')
                    continue
                if known is None:
                    known = self._named_actions()
                if not any(n in known for n in names):
                    self.warn("unknown-action", f"action group '{action.value}' names no known action "
                              f"({', '.join(names) or 'it is empty'})", action.span,
                              "no rule head, schema 'for action' or 'action ==' condition names one of them; "
                              "check the const is a list of actions")
                actions.extend(ast.Name(n, span=action.span) for n in names)
            expanded = replace(s, decl=replace(rule, actions=tuple(dict.fromkeys(actions))))
            self.scoped["rules"][i] = expanded
            group_list = self.by_kind[ast.RuleDecl]
            group_list[group_list.index(s)] = expanded

    def check_scope_actions(self) -> None:
        """An action group (a visible const) named in ``applies to action``, ``scope action`` or a schema's
        ``for action`` is an error: there the name is taken as one action, which no request is, so a scoped
        deny or gate would apply to nothing (and a schema check nothing)."""
        for f in self.files:
            pkg = f.package.value
            visible = None
            places = [("'scope action'", f.scope)] + [("'applies to action'", getattr(d, "applies", None))
                                                    for d in f.decls] + [
                ("a schema's 'for action'", d) for d in f.decls if isinstance(d, ast.SchemaDecl)]
            for where, holder in places:
                for action in getattr(holder, "actions", ()) if holder is not None else ():
                    if visible is None:
                        visible = self.visible_consts(pkg)
                    group = visible.get(action.value)
                    if group is None:
                        continue
                    items = group.items if isinstance(group, ast.ListExpr) else ()
                    names = ", ".join(i.value for i in items if isinstance(i, ast.Literal) and isinstance(i.value, str))
                    self.report("action-group", f"'{action.value}' is an action group (a const), but {where} names "
                                "single actions: as written it would apply to no request", action.span,
                                f"write the actions ({names})" if names else "write the actions by name")

    def check_action_case(self) -> None:
        """Two actions the rules name that differ only in case (``delete`` and ``Delete``) are an error, as two
        roles are: a request spelling one is exact for it and no rule about the other reaches it, so
        ``deny any to Delete`` let ``delete`` through to an allow."""
        written: list[ast.Name] = [a for s in self.each(ast.RuleDecl) for a in s.decl.actions
                                   if a.value not in ("any", "*")]
        written += [a for s in self.each(ast.SchemaDecl) for a in s.decl.actions]
        for f in self.files:
            for scope in (f.scope, *(getattr(d, "applies", None) for d in f.decls)):
                if scope is not None:
                    written.extend(scope.actions)
        first: dict[str, ast.Name] = {}
        for name in written:
            seen = first.setdefault(name.value.casefold(), name)
            if seen.value != name.value:
                self.report("name-case", f"action '{name.value}' differs only in case from '{seen.value}'",
                            name.span, f"names are exact and requests that differ only in case are refused; "
                            f"rename one (first at {seen.span})")
        for value in sorted(self._actions_beside_heads):  # also named in 'action ==' / 'action in' tests
            seen = first.get(value.casefold())
            if seen is not None and seen.value != value:
                self.report("name-case", f"action '{seen.value}' differs only in case from '{value}', which an "
                            "'action ==' or 'action in' test names", seen.span,
                            "names are exact and requests that differ only in case are refused; rename one")

    def _named_actions(self) -> set[str]:
        """Actions named outside action groups: rule heads, schemas' ``for action``, ``applies to``/``scope``
        actions, ``action ==/in`` tests (once groups are expanded: every action the rules name)."""
        known = set(self._actions_beside_heads)
        for s in self.each(ast.RuleDecl):
            visible = self.const_decls.get(s.package, {})
            known.update(a.value for a in s.decl.actions if a.value not in visible and a.value not in ("any", "*"))
        return known

    @functools.cached_property
    def _actions_beside_heads(self) -> frozenset[str]:
        """The actions schemas, scopes and conditions name: expanding groups changes none of them, so the
        walk of every condition is done once for the warning and ``PolicySet.actions`` alike."""
        from .conditions import _literal_value

        known: set[str] = set()
        for s in self.each(ast.SchemaDecl):
            known.update(a.value for a in s.decl.actions)
        for f in self.files:
            for scope in (f.scope, *(getattr(d, "applies", None) for d in f.decls)):
                if scope is not None:
                    known.update(a.value for a in scope.actions)

        def walk(pkg: str, expr: ast.Expr | None) -> None:
            if isinstance(expr, (ast.And, ast.Or)):
                for item in expr.items:
                    walk(pkg, item)
            elif isinstance(expr, ast.Not):
                walk(pkg, expr.operand)
            elif isinstance(expr, ast.Compare) and isinstance(expr.left, ast.Path) and expr.left.dotted == "action":
                ok, value = _literal_value(expr.right, self.visible_consts(pkg))
                if ok:
                    known.update(v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, str))

        for kind in (ast.RuleDecl, ast.EscalateDecl, ast.RouteDecl, ast.ResidencyDecl):
            for s in self.each(kind):
                walk(s.package, getattr(s.decl, "when", None))
                walk(s.package, getattr(s.decl, "unless", None))
        return frozenset(known)

    def visible_consts(self, pkg: str) -> dict[str, ast.Expr]:
        """Own consts first, then those of imported packages (first import wins)."""
        visible: dict[str, ast.Expr] = {}
        for source in (pkg, *self.imports.get(pkg, ())):
            for name in self.const_decls.get(source, {}):
                if name not in visible:
                    value = self._resolve_declared(source, name)
                    if value is not None:
                        visible[name] = value
        return visible

    def lookup_const(self, pkg: str, ref: ast.ConstRef, report: bool = True) -> ast.Expr | None:
        """The substituted value ``ref`` names in ``pkg``, reporting when it names nothing."""
        if ref.name in self.const_decls.get(pkg, {}):
            return self._resolve_declared(pkg, ref.name)
        owners = [p for p in self.imports.get(pkg, ()) if ref.name in self.const_decls.get(p, {})]
        if len(owners) > 1 and report:
            self.report("ambiguous-const", f"'{ref.name}' is declared in several imported packages: "
                        + ", ".join(owners), ref.span, f"declare '{ref.name}' in package {pkg} to choose one")
        if owners:
            return self._resolve_declared(owners[0], ref.name)
        if report:
            candidates = [*self.const_decls.get(pkg, {}), *ast.ATTRIBUTE_ROOTS]
            for p in self.imports.get(pkg, ()):
                candidates.extend(self.const_decls.get(p, {}))
            hint = suggest(ref.name, candidates)
            if hint is None:
                elsewhere = sorted(p for p, c in self.const_decls.items() if ref.name in c and p != pkg)
                if elsewhere:
                    hint = f"'{ref.name}' is declared in package {elsewhere[0]}; add 'import {elsewhere[0]}'"
                missing = [p for p in self.imports.get(pkg, ()) if p not in self.packages]
                if hint is None and missing:
                    hint = (f"it may be declared in package {missing[0]}, which is imported but was not found; "
                            "check it together with the file that declares that package")
            self.report("unknown-const", f"unknown const '{ref.name}'", ref.span, hint)
        return None

    def _resolve_declared(self, pkg: str, name: str) -> ast.Expr | None:
        key = (pkg, name)
        if key in self._resolved:
            return self._resolved[key]
        decl = self.const_decls[pkg][name]
        if key in self._resolving:
            cycle = [n for _, n in self._resolving[self._resolving.index(key) :]] + [name]
            self.report("const-cycle", "consts refer to each other in a cycle: " + " -> ".join(cycle),
                        decl.name.span)
            return None
        self._resolving.append(key)
        try:
            value = self._substitute(pkg, decl.value)
        finally:
            self._resolving.pop()
        self._resolved[key] = value
        return value

    def _substitute(self, pkg: str, expr: ast.Expr) -> ast.Expr | None:
        if isinstance(expr, ast.ConstRef):
            return self.lookup_const(pkg, expr)
        if isinstance(expr, ast.ListExpr):
            items: list[ast.Expr] = []
            for item in expr.items:
                value = self._substitute(pkg, item)
                if value is None:
                    return None
                # a list const inside a list is spliced in: [EU, "CH"] is one flat list
                spliced = isinstance(item, ast.ConstRef) and isinstance(value, ast.ListExpr)
                items.extend(value.items if spliced else (value,))  # type: ignore[union-attr]
            return replace(expr, items=tuple(items))
        if isinstance(expr, ast.Record):
            entries: list[tuple[str, ast.Expr]] = []
            for key, item in expr.entries:
                value = self._substitute(pkg, item)
                if value is None:
                    return None
                if not isinstance(value, (ast.Literal, ast.ListExpr, ast.Duration)) or (
                        isinstance(value, ast.ListExpr) and not all(isinstance(i, ast.Literal) for i in value.items)):
                    self.report("type-mismatch", f"the entry {key!r} of a record must be a string, number, boolean "
                                f"or list of them, not {show(item)}", item.span)
                    return None
                entries.append((key, value))
            return replace(expr, entries=tuple(entries))
        if isinstance(expr, ast.Path):
            self.check_path(expr)
        return expr

    # -- stage: references to roles, agents, models -----------------------------------------

    def _unknown(self, kind: str, name: ast.Name, table: dict[str, object]) -> None:
        key = (kind, name.value)
        if key not in self._hints:  # a name misspelt once is often misspelt many times
            self._hints[key] = suggest(name.value, table) or f"declare it with '{kind} {format_name(name)}'"
        self.report(f"unknown-{kind}", f"unknown {kind} '{name.value}'", name.span, self._hints[key])

    def role_ref(self, name: ast.Name) -> None:
        if name.value not in self.roles and name.value not in self.ambiguous:  # else ambiguous-role
            self._unknown("role", name, self.roles)

    def model_ref(self, name: ast.Name) -> None:
        if name.value not in self.models:
            self._unknown("model", name, self.models)

    def agent_ref(self, name: ast.Name) -> None:
        if name.value not in self.agents:
            self._unknown("agent", name, self.agents)

    def check_references(self) -> None:
        for s in self.each(ast.AgentDecl):
            for role in s.decl.roles:
                self.role_ref(role)
        for s in self.each(ast.RuleDecl):
            self._rule_references(s.decl)
        for s in self.each(ast.EscalateDecl):
            self.role_ref(s.decl.role)
        for s in self.each(ast.RouteDecl):
            seen: set[str] = set()
            for model in s.decl.prefer:
                self.model_ref(model)
                if model.value in seen:
                    self.warn("duplicate-candidate", f"model '{model.value}' is preferred twice", model.span)
                seen.add(model.value)
        for s in self.each(ast.BudgetDecl):
            self._budget_references(s.decl)
        for s in (*self.each(ast.BiasDecl), *self.each(ast.DriftDecl)):
            self.model_ref(s.decl.model)
            self._breach_references(s.decl.on_breach)
        self._prefix_case()

    def _prefix_case(self) -> None:
        """A deny's literal id prefix that differs only in case from another rule's (``Prod/**`` beside
        ``prod/**``) is a name-case error: a request for ``prod/x`` is exact for one and the deny about the other
        never reaches it, while a request differing only in case from a single spelling is refused (engine.md)."""
        seen: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], ast.RuleDecl]] = {}
        for s in self.each(ast.RuleDecl):
            rule = s.decl
            segments: list[str] = []
            for segment in rule.resource_pattern.split("/"):
                if has_glob(segment):
                    break
                segments.append(segment)
            for n in range(1, len(segments) + 1):
                written = tuple(segments[:n])
                spellings = seen.setdefault((rule.resource_kind.value, tuple(x.casefold() for x in written)), {})
                other = next((r for w, r in spellings.items() if w != written and "deny" in (r.effect, rule.effect)),
                             None)
                if other is not None:
                    self.report("name-case", f"'{'/'.join(written)}' in \"{rule.resource_pattern}\" differs only in "
                                f"case from '{'/'.join(next(w for w, r in spellings.items() if r is other))}' in "
                                f"\"{other.resource_pattern}\"", rule.pattern_span or rule.resource_kind.span,
                                f"ids are exact: a request for one spelling is not about the other, so a deny "
                                f"about one does not reach the other; write one spelling (first at {other.span})")
                    break
                spellings.setdefault(written, rule)

    def _rule_references(self, rule: ast.RuleDecl) -> None:
        principal = rule.principal
        if principal.kind == "role" and principal.name is not None:
            self.role_ref(principal.name)
        elif principal.kind == "agent" and principal.name is not None:
            self.agent_ref(principal.name)
        kind = rule.resource_kind.value
        if kind not in RESOURCE_KINDS:
            self.report("unknown-resource-kind", f"unknown resource kind '{kind}'", rule.resource_kind.span,
                        suggest(kind, RESOURCE_KINDS) or "resource kinds are " + ", ".join(RESOURCE_KINDS))
        pattern = rule.resource_pattern
        problem = pattern_problem(pattern)
        if problem is not None:
            self.report("dead-pattern", f"no request can name an id \"{pattern}\" matches: the pattern {problem}",
                        rule.pattern_span or rule.resource_kind.span, "ids are canonical: '/'-separated segments, "
                        "none empty, '.' or '..' (see engine.md); write \"erp/**\", not \"/erp/**\" or \"erp/\"")
            return
        if rule.effect == "deny" and pattern not in ("*", "**") and _SINGLE_STAR.search(pattern):
            self.warn("glob-segment", f"'*' in \"{pattern}\" matches within one '/' segment only, so this deny "
                      "no longer covers ids below it", rule.pattern_span or rule.resource_kind.span,
                      f"write \"{_SINGLE_STAR.sub('**', pattern)}\" to deny across segments")
        if kind in ("model", "agent") and pattern and not (GLOB_CHARS & set(pattern)):
            table: dict[str, object] = self.models if kind == "model" else self.agents  # type: ignore[assignment]
            if pattern not in table:
                self.warn(f"undeclared-{kind}", f"{kind} \"{pattern}\" is not declared, so this rule never applies",
                          rule.pattern_span or rule.resource_kind.span,
                          suggest(pattern, table) or f"declare it with '{kind} {format_name(ast.Name(pattern, span=rule.resource_kind.span))}'")

    def _budget_references(self, budget: ast.BudgetDecl) -> None:
        scope = budget.scope
        tables = {"model": self.models, "agent": self.agents, "role": self.roles}
        if scope.kind in tables and scope.value not in tables[scope.kind] \
                and not (scope.kind == "role" and scope.value in self.ambiguous):
            self._unknown(scope.kind, ast.Name(scope.value, span=scope.span), tables[scope.kind])
        action = budget.on_exceed
        if isinstance(action, ast.EscalateAction):
            self.role_ref(action.role)
        elif isinstance(action, ast.RouteAction):
            self.model_ref(action.model)

    def _breach_references(self, action: ast.BreachAction | None) -> None:
        if isinstance(action, ast.EscalateAction):
            self.role_ref(action.role)

    # -- stage: expressions -----------------------------------------------------------------

    def check_path(self, path: ast.Path, request: bool | None = None) -> None:
        """``request``: True in per-request conditions, False over audit data, None in consts."""
        if path.root not in ast.ATTRIBUTE_ROOTS:
            self.report("unknown-attribute", f"unknown attribute '{path.dotted}'", path.span,
                        suggest(path.root, ast.ATTRIBUTE_ROOTS)
                        or "attributes start with " + ", ".join(sorted(ast.ATTRIBUTE_ROOTS)))
        elif path.root in SCALAR_ROOTS and path.parts:
            self.report("unknown-attribute", f"'{path.root}' is a single name and has no attribute "
                        f"'{path.parts[0]}'", path.span, f"compare '{path.root}' itself, e.g. {path.root} == \"...\"")
        elif request and self.attr_kinds and (key := attribute_key(path)) is not None and key not in self.attr_kinds:
            self.warn("undeclared-attribute", f"'{path.dotted}' is read but no schema declares it", path.span,
                      f"add 'attribute {path.dotted} TYPE' to a schema (check --strict requires it)")
        elif request and path.root in AUDIT_ROOTS:
            self.warn("misplaced-attribute", f"'{path.root}' is only known in the audit trail, never in a request, "
                      "so this comparison is always false", path.span,
                      "use it in bias and drift monitors; requests carry principal, action, resource, data, context")

    def conditions(self) -> Iterator[tuple[str, ast.Expr, bool]]:
        """Every condition: the package whose consts it sees, and whether a request is its input."""
        for s in self.each(ast.RuleDecl):
            yield from ((s.package, e, True) for e in (s.decl.when, s.decl.unless) if e is not None)
        for kind in (ast.ResidencyDecl, ast.EscalateDecl, ast.RouteDecl):
            for s in self.each(kind):
                if s.decl.when is not None:
                    yield s.package, s.decl.when, True
        for s in self.each(ast.BiasDecl):
            yield s.package, s.decl.positive, False

    def check_expressions(self) -> None:
        for pkg, expr, request in self.conditions():
            self.condition(pkg, expr, request)
        for s in self.each(ast.ResidencyDecl):
            regions = s.decl.regions
            self.value(s.package, regions, True)
            if self.kind(s.package, regions) not in ("list", None):
                self.report("type-mismatch", f"'require region in' needs a list of regions, not {show(regions)}",
                            regions.span, 'write a list such as ["eu-west-1"] or a const that holds one')
            elif isinstance(regions, ast.ListExpr):
                for item in regions.items:
                    if self.kind(s.package, item) not in ("string", None):
                        self.report("type-mismatch", f"a region is a name in quotes, not {show(item)}", item.span,
                                    'write it as "eu-west-1"')
        for s in self.each(ast.BiasDecl):
            self.check_path(s.decl.group_by, False)
        for s in self.each(ast.DriftDecl):
            self.check_path(s.decl.of, False)

    def condition(self, pkg: str, expr: ast.Expr, request: bool) -> None:
        if isinstance(expr, (ast.And, ast.Or)):
            for item in expr.items:
                self.condition(pkg, item, request)
        elif isinstance(expr, ast.Not):
            self.condition(pkg, expr.operand, request)
        elif isinstance(expr, ast.Compare) and expr.op == "has":
            self.value(pkg, expr.left, request)
        elif isinstance(expr, ast.Compare):
            self.value(pkg, expr.left, request)
            self.value(pkg, expr.right, request)
            self.compare_types(pkg, expr)
        else:
            self.value(pkg, expr, request)
            kind = self.kind(pkg, expr)
            if kind not in ("bool", None):
                self.report("type-mismatch", f"expected a condition, found {_ARTICLE[kind]} {show(expr)}",
                            expr.span, "compare it with ==, <, in ... to make a condition")

    def value(self, pkg: str, expr: ast.Expr, request: bool) -> None:
        if isinstance(expr, ast.Path):
            self.check_path(expr, request)
        elif isinstance(expr, ast.ConstRef):
            self.lookup_const(pkg, expr)
        elif isinstance(expr, ast.ListExpr):
            for item in expr.items:
                self.value(pkg, item, request)
        elif isinstance(expr, ast.TimeOf):
            self.time_of(pkg, expr, request)
        elif isinstance(expr, ast.Lookup):
            self.lookup(pkg, expr, request)
        elif isinstance(expr, ast.Record):
            self.report("type-mismatch", "a record is a const value: declare it with 'const NAME = {...}' and "
                        "look it up as NAME[key]", expr.span)
        elif not isinstance(expr, (ast.Literal, ast.Duration)):
            self.report("type-mismatch", f"expected a value, found the condition {show(expr)}", expr.span)

    def lookup(self, pkg: str, expr: ast.Lookup, request: bool) -> None:
        """``LIMITS[data.region]``: LIMITS is a record const, the key a string; a literal key must be in it."""
        self.value(pkg, expr.key, request)
        table = self.lookup_const(pkg, expr.table)
        if table is None:
            return
        if not isinstance(table, ast.Record):
            self.report("type-mismatch", f"'{expr.table.name}' is not a record, so it has no entries to look up",
                        expr.table.span, 'declare it as const NAME = {"key": value, ...}')
            return
        kind = self.kind(pkg, expr.key)
        if kind not in ("string", None):
            self.report("type-mismatch", f"a record's keys are strings, but {show(expr.key)} is {_ARTICLE[kind]}",
                        expr.key.span)
        key = self.lookup_const(pkg, expr.key, report=False) if isinstance(expr.key, ast.ConstRef) else expr.key
        if isinstance(key, ast.Literal) and isinstance(key.value, str) and key.value not in dict(table.entries):
            self.report("type-mismatch", f"'{expr.table.name}' has no entry {show(key)}", expr.key.span,
                        "its keys are " + ", ".join(f'"{k}"' for k, _ in table.entries))

    def time_of(self, pkg: str, expr: ast.TimeOf, request: bool) -> None:
        """``hour of X``: X is a timestamp attribute (when a schema types it); the zone exists."""
        from .conditions import zone_info

        self.value(pkg, expr.operand, request)
        operand = expr.operand
        key = attribute_key(operand) if isinstance(operand, ast.Path) else None
        if not isinstance(operand, ast.Path) or key in self.attr_kinds and key not in self.attr_timestamps:
            kind = self.kind(pkg, operand)
            self.report("type-mismatch", f"'{expr.part} of' reads a timestamp, but {show(operand)} is "
                        f"{_ARTICLE.get(kind or '', 'not an attribute')}", operand.span,
                        "declare it 'timestamp' in a schema" if isinstance(operand, ast.Path) else None)
        if expr.zone is not None and zone_info(expr.zone) is None:
            self.report("type-mismatch", f"{expr.zone!r} is not a time zone", expr.span,
                        'use an IANA name such as "Europe/Paris", or "UTC"')

    def kind(self, pkg: str, expr: ast.Expr) -> str | None:
        """'string' | 'number' | 'bool' | 'list', or None when only known at run time."""
        if isinstance(expr, ast.ConstRef):
            value = self.lookup_const(pkg, expr, report=False)
            return None if value is None else self.kind(pkg, value)
        if isinstance(expr, ast.Literal):
            return _kind_of_value(expr.value)
        if isinstance(expr, ast.ListExpr):
            return "list"
        if isinstance(expr, ast.Duration):
            return "duration"
        if isinstance(expr, ast.TimeOf):
            return _TIME_KINDS[expr.part]
        if isinstance(expr, ast.Record):
            return "record"
        if isinstance(expr, ast.Lookup):  # the kind all entries share, if they do
            table = self.lookup_const(pkg, expr.table, report=False)
            if not isinstance(table, ast.Record):
                return None
            kinds = {self.kind(pkg, v) for _, v in table.entries}
            return kinds.pop() if len(kinds) == 1 else None
        if isinstance(expr, (ast.Compare, ast.And, ast.Or, ast.Not)):
            return "bool"
        if isinstance(expr, ast.Path):
            key = attribute_key(expr)
            return self.attr_kinds.get(key) if key is not None else None
        return None

    def compare_types(self, pkg: str, cmp: ast.Compare) -> None:
        self._role_literals(pkg, cmp)
        left, right = self.kind(pkg, cmp.left), self.kind(pkg, cmp.right)
        if cmp.op in ast.SET_OPS:
            if left not in ("list", None):
                self.report("type-mismatch", f"'{cmp.op}' looks into a list, but {show(cmp.left)} is "
                            f"{_ARTICLE[left]}", cmp.left.span, "use == to compare single values")
            elif cmp.op == "contains" and right == "list":
                self.report("type-mismatch", f"'contains' looks for one value, but {show(cmp.right)} is a list",
                            cmp.right.span, "use 'contains any' or 'contains all' with a list")
            elif cmp.op != "contains" and right not in ("list", None):
                self.report("type-mismatch", f"'{cmp.op}' needs a list on its right, but {show(cmp.right)} is "
                            f"{_ARTICLE[right]}", cmp.right.span, f"write [{show(cmp.right)}] or use 'contains'")
            return
        if cmp.op in ast.IP_OPS:
            from .conditions import _literal_value, networks

            value = self.lookup_const(pkg, cmp.right, report=False) if isinstance(cmp.right, ast.ConstRef) else cmp.right
            ok, literal = _literal_value(value, {}) if value is not None else (False, None)
            if ok and networks(literal) is None:
                self.report("type-mismatch", f"{show(cmp.right)} is not a CIDR block or a list of them", cmp.right.span,
                            'write "10.0.0.0/8" or ["10.0.0.0/8", "2001:db8::/32"]')
            elif left not in ("string", None):
                self.report("type-mismatch", f"'in cidr' tests an IP address, but {show(cmp.left)} is "
                            f"{_ARTICLE[left]}", cmp.left.span)
            return
        if cmp.op in ast.STRING_OPS:
            for side, kind in ((cmp.left, left), (cmp.right, right)):
                if kind not in ("string", None):
                    self.report("type-mismatch", f"'{cmp.op}' tests strings, but {show(side)} is {_ARTICLE[kind]}",
                                side.span)
                    return
            return
        if cmp.op in ("<", "<=", ">", ">="):
            for side, kind in ((cmp.left, left), (cmp.right, right)):
                if kind in ("string", "list", "bool"):
                    self.report("type-mismatch", f"'{cmp.op}' orders numbers, but {show(side)} is {_ARTICLE[kind]}",
                                side.span, "use == or != for strings, 'in' for lists" if kind != "bool" else None)
                    return
            if {left, right} == {"duration", "number"}:
                side = cmp.right if right == "number" else cmp.left
                self.report("type-mismatch", f"comparing a duration with a number: {show(side)} has no unit",
                            side.span, f"write a duration such as '{show(side)}d' or '{show(side)}h'")
                return
        elif cmp.op in ("in", "not in"):
            if right not in ("list", None):
                self.report("type-mismatch", f"'{cmp.op}' needs a list on its right, but {show(cmp.right)} is "
                            f"{_ARTICLE[right]}", cmp.right.span,
                            f"write [{show(cmp.right)}] or use {'==' if cmp.op == 'in' else '!='}")
        else:
            for side, kind in ((cmp.right, right), (cmp.left, left)):
                if kind == "list":
                    self.report("type-mismatch", f"'{cmp.op}' compares single values, but {show(side)} is a list",
                                side.span, f"use '{'in' if cmp.op == '==' else 'not in'}' to test membership")
                    return
            if left is not None and right is not None and left != right:
                self.report("type-mismatch", f"comparing {_ARTICLE[left]} with {_ARTICLE[right]}: "
                            f"{show(cmp)} is {'never' if cmp.op == '==' else 'always'} true", cmp.right.span,
                            "remove the quotes" if left == "number" else None)
                return
        self._weekday_literals(pkg, cmp)
        self._schema_literals(pkg, cmp)

    def _weekday_literals(self, pkg: str, cmp: ast.Compare) -> None:
        """``weekday of X == "sat"``: the strings are weekdays (mon ... sun), else the test never holds."""
        if not (isinstance(cmp.left, ast.TimeOf) and cmp.left.part == "weekday"):
            return
        right = self.lookup_const(pkg, cmp.right, report=False) if isinstance(cmp.right, ast.ConstRef) else cmp.right
        for item in right.items if isinstance(right, ast.ListExpr) else (right,):
            if isinstance(item, ast.Literal) and isinstance(item.value, str) and item.value not in ast.WEEKDAYS:
                self.report("type-mismatch", f"{show(item)} is not a weekday", item.span,
                            "weekdays are " + ", ".join(f'"{d}"' for d in ast.WEEKDAYS))

    def _role_literals(self, pkg: str, cmp: ast.Compare) -> None:
        """``principal.roles contains "x"`` and ``"x" in principal.roles``: x is a declared role (the roles a
        request holds are declared ones and those they extend; another name is never among them)."""
        def is_roles(e: ast.Expr) -> bool:
            return isinstance(e, ast.Path) and e.dotted == "principal.roles"

        if is_roles(cmp.left) and cmp.op in ast.SET_OPS:
            side = cmp.right
        elif is_roles(cmp.right) and cmp.op in ("in", "not in"):
            side = cmp.left
        else:
            return
        value = self.lookup_const(pkg, side, report=False) if isinstance(side, ast.ConstRef) else side
        for lit in value.items if isinstance(value, ast.ListExpr) else (value,):
            if isinstance(lit, ast.Literal) and isinstance(lit.value, str):
                self.role_ref(ast.Name(lit.value, span=lit.span))

    def _schema_literals(self, pkg: str, cmp: ast.Compare) -> None:
        """A string compared with an enum attribute must be one of its values (both normalised)."""
        if not isinstance(cmp.left, ast.Path) or cmp.op not in ("==", "!=", "in", "not in"):
            return
        built_in = _BUILT_IN_VALUES.get(cmp.left.dotted)
        if built_in is not None or cmp.left.dotted == "action":  # a request has only these (any other is malformed)
            right = self.lookup_const(pkg, cmp.right, report=False) if isinstance(cmp.right, ast.ConstRef) \
                else cmp.right
            for lit in right.items if isinstance(right, ast.ListExpr) and cmp.op in ("in", "not in") else (right,):
                if not isinstance(lit, ast.Literal) or not isinstance(lit.value, str):
                    continue
                if built_in is None and not ast.ACTION_NAME.fullmatch(lit.value):
                    self.report("type-mismatch", f"{show(lit)} is not an action name (letters, digits and '_'), so no "
                                "request's action is it", lit.span, "actions have no wildcards or separators; name "
                                "each action, or use an action group")
                elif built_in is not None and lit.value not in built_in:
                    self.report("type-mismatch", f"{show(lit)} is not a value of {cmp.left.dotted} (a request's is "
                                f"one of {', '.join(built_in)})", lit.span, suggest(lit.value, built_in))
            return
        key = attribute_key(cmp.left)
        if key is None or key not in self.attr_kinds:
            return
        right = self.lookup_const(pkg, cmp.right, report=False) if isinstance(cmp.right, ast.ConstRef) else cmp.right
        literals = right.items if isinstance(right, ast.ListExpr) and cmp.op in ("in", "not in") else (right,)
        from .schema import AttributeSpec

        spec = AttributeSpec(key, "string", normalise=self.attr_normal.get(key, ()))
        for lit in literals:
            if not isinstance(lit, ast.Literal) or not isinstance(lit.value, str):
                continue
            enum = self.attr_enums.get(key)
            if enum is not None and spec.normal(lit.value) not in {spec.normal(v) for v in enum}:
                self.report("type-mismatch", f"{show(lit)} is not a value of {cmp.left.dotted} (the schema's enum: "
                            f"{', '.join(sorted(enum))})", lit.span, suggest(lit.value, enum))
