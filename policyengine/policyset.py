"""The checked policy set: what ``check`` hands to ``compile``.

Names are resolved here once (roles closed under ``extends``, consts substituted
by their values per package) so the compiler never has to look anything up by
scope. Roles, agents and models form one namespace across the whole set; rules,
gates and the other named declarations are identified as ``package.name``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar

from . import ast
from .diagnostics import Span

D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Scoped(Generic[D]):
    """A declaration together with the package that declared it."""

    package: str
    decl: D

    @property
    def id(self) -> str:
        return f"{self.package}.{self.decl.name.value}"  # type: ignore[attr-defined]

    @property
    def file(self) -> str:
        return self.decl.span.file  # type: ignore[attr-defined]

    @property
    def line(self) -> int:
        return self.decl.span.line  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PolicySet:
    files: tuple[ast.PolicyFile, ...]
    roles: Mapping[str, Scoped[ast.RoleDecl]]
    # role -> the role itself and every role it extends, transitively
    role_closure: Mapping[str, frozenset[str]]
    agents: Mapping[str, Scoped[ast.AgentDecl]]
    models: Mapping[str, Scoped[ast.ModelDecl]]
    # package -> const name visible in that package (own and imported) -> value,
    # with const references inside values already replaced by what they name
    consts: Mapping[str, Mapping[str, ast.Expr]]
    rules: tuple[Scoped[ast.RuleDecl], ...] = ()
    residencies: tuple[Scoped[ast.ResidencyDecl], ...] = ()
    budgets: tuple[Scoped[ast.BudgetDecl], ...] = ()
    escalations: tuple[Scoped[ast.EscalateDecl], ...] = ()
    routes: tuple[Scoped[ast.RouteDecl], ...] = ()
    biases: tuple[Scoped[ast.BiasDecl], ...] = ()
    drifts: tuple[Scoped[ast.DriftDecl], ...] = ()
    schemas: tuple[Scoped[ast.SchemaDecl], ...] = ()
    # ``mask PATH hash|drop`` declarations: request fields the audit log drops or hashes
    masks: tuple[Scoped[ast.MaskDecl], ...] = ()
    # package -> its file-level ``cite`` references, kept in decisions
    package_cites: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # file as parsed -> the name decisions and reports record (relative to the rules root; rule_paths.py)
    file_names: Mapping[str, str] = field(default_factory=dict)
    # every action the rules name (heads, groups expanded; schemas' ``for action``; ``applies to``/``scope``
    # actions; ``action ==``/``in`` tests): a request action that only looks like one (identity.name_fold) is refused
    actions: frozenset[str] = frozenset()

    @property
    def mask_fields(self) -> tuple[tuple[str, tuple[str, ...], str], ...]:
        """(root, parts, action) of every declared mask, for ``policyengine.audit.masking.rule_masking``."""
        return tuple((m.decl.path.root, m.decl.path.parts, m.decl.action.value)
                     for m in self.masks if isinstance(m.decl.path, ast.Path))

    @property
    def declares_versions(self) -> bool:
        """Whether a model or agent declares ``version``s: then every caller stamps requests (models_registry)."""
        return any(scoped.decl.versions for table in (self.models, self.agents) for scoped in table.values())

    def substitute(self, package: str, expr: ast.Expr) -> ast.Expr:
        """``expr`` with every const reference replaced by the value it names in ``package``.

        A list const inside a list is spliced in (``[EU, "CH"]`` is one flat list),
        the same way the checker resolved const values. References the checker
        would have rejected are left as they are.
        """
        visible = self.consts.get(package, {})
        if isinstance(expr, ast.ConstRef):
            return visible.get(expr.name, expr)
        if isinstance(expr, ast.ListExpr):
            items: list[ast.Expr] = []
            for item in expr.items:
                value = self.substitute(package, item)
                spliced = isinstance(item, ast.ConstRef) and isinstance(value, ast.ListExpr)
                items.extend(value.items if spliced else (value,))  # type: ignore[union-attr]
            return replace(expr, items=tuple(items))
        if isinstance(expr, ast.Compare):
            return replace(expr, left=self.substitute(package, expr.left), right=self.substitute(package, expr.right))
        if isinstance(expr, (ast.And, ast.Or)):
            return replace(expr, items=tuple(self.substitute(package, i) for i in expr.items))
        if isinstance(expr, ast.Not):
            return replace(expr, operand=self.substitute(package, expr.operand))
        if isinstance(expr, ast.Lookup):  # the table stays a name: compile folds it, errors name it
            return replace(expr, key=self.substitute(package, expr.key))
        return expr

    def paths(self) -> tuple[str, ...]:
        """The files of the set, as parsed, in order."""
        return tuple(f.path for f in self.files)

    def expression_roots(self) -> tuple[object, ...]:
        """Nodes whose subtrees hold every condition and value of the set: for walks looking for a kind of
        expression (``age of``: ``jsonl.reads_clock``). Here the files and the consts."""
        return (*self.files, *self.consts.values())

    def scopes_beside_rules(self) -> dict[Span, ast.Scope]:
        """``decl.span -> its file's scope`` for the declarations of scoped files that are not rules."""
        return {decl.span: f.scope for f in self.files if f.scope is not None
                for decl in f.decls if not isinstance(decl, ast.RuleDecl)}

    def roles_of(self, role_names: "list[str] | tuple[str, ...] | frozenset[str]") -> frozenset[str]:
        """Every role held through ``role_names`` and their ancestors; unknown names are dropped."""
        held: set[str] = set()
        for name in role_names:
            held |= self.role_closure.get(name, frozenset())
        return frozenset(held)


_Trees = tuple[tuple[ast.PolicyFile, ...], tuple[Scoped[ast.RuleDecl], ...]]


class _Tree:
    """``files`` or ``rules`` of a ``LazyPolicySet``: read on first use, then kept in the instance."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, ps: "LazyPolicySet | None", owner: type | None = None) -> Any:
        if ps is None:
            return self
        ps._read_trees()
        return ps.__dict__[self.name]


class LazyPolicySet(PolicySet):
    """A ``PolicySet`` read from the disk cache without its syntax trees.

    Everything but ``files`` and ``rules`` is here from the start (roles, consts,
    gates, file names, ...; what compiling and deciding read). ``files`` and
    ``rules``, the trees of every declaration (a million objects at 100,000
    rules), are read when something first asks for them (``explain``, reports,
    policy tests), by ``trees``, once. The declarations beside the rules are the
    same objects in the trees as here (the loader pickles them once); their
    scopes are looked up by where they are written (``file_scopes``).
    """

    files = _Tree()  # type: ignore[assignment]
    rules = _Tree()  # type: ignore[assignment]

    @classmethod
    def of(cls, light: PolicySet, paths: tuple[str, ...], scopes: dict[Span, ast.Scope],
           roots: tuple[object, ...], trees: Callable[[], _Trees]) -> "LazyPolicySet":
        """``light`` (whose ``files`` and ``rules`` are left out) with ``trees`` to read them.

        ``roots``: the declarations beside the rules and every distinct condition of
        the rules (what in the trees can hold an expression), for ``expression_roots``.
        """
        ps = object.__new__(cls)
        state = {f.name: getattr(light, f.name) for f in fields(PolicySet) if f.name not in ("files", "rules")}
        ps.__dict__.update(state, _paths=paths, _scopes=scopes, _roots=roots, _trees=trees, _lock=threading.Lock())
        return ps

    def _read_trees(self) -> None:
        with self.__dict__["_lock"]:
            if "files" not in self.__dict__:
                files, rules = self.__dict__["_trees"]()
                self.__dict__.update(files=files, rules=rules)

    # A copy made by ``dataclasses.replace`` is built by the dataclass ``__init__``: it holds its trees
    # and none of what ``of`` stores, so it answers as a ``PolicySet`` does.

    def paths(self) -> tuple[str, ...]:
        found = self.__dict__.get("_paths")
        return super().paths() if found is None else found

    def expression_roots(self) -> tuple[object, ...]:
        """Without reading the trees: a rule holds expressions only in ``when`` and ``unless``, and
        conditions written alike hold the same kinds of expression."""
        found = self.__dict__.get("_roots")
        return super().expression_roots() if found is None else (*found, *self.consts.values())

    def scopes_beside_rules(self) -> dict[Span, ast.Scope]:
        found = self.__dict__.get("_scopes")
        return super().scopes_beside_rules() if found is None else found

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (or copied) as the whole ``PolicySet``, trees included."""
        return PolicySet, tuple(getattr(self, f.name) for f in fields(PolicySet))
