"""Which declarations and which ``when`` clauses no policy test exercised.

A declaration (rule, residency, budget, escalation gate, route, bias, drift) is *exercised*
when it took part in at least one tested decision: it is named by a reason or an
obligation of the decision, or (a route) it chose the candidates of a routed
request. A ``when``/``unless`` clause — each single comparison inside the
condition, at its ``file:line:col`` — is exercised when it held (was true) for
at least one tested request that reached its declaration (for a rule: the
principal, action, kind and resource id matched). Clauses are compiled with the
engine's own ``compile_expr``, so "held" means exactly what the engine means.

A ``bias`` or ``drift`` rule is judged over the audit trail, not per request: it
is exercised when a monitor case of a test file ran it (the runner tells the
collector through ``monitored``). Those rules have no ``when`` clauses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import ast
from ..globs import glob_match
from ..conditions import compile_expr, expr_text, holds
from ..schema import schema_normalisers
from ..decision import Decision

# declaration type -> the word shown in reports
_KINDS: Mapping[type, str] = {
    ast.RuleDecl: "rule",
    ast.ResidencyDecl: "residency",
    ast.BudgetDecl: "budget",
    ast.EscalateDecl: "escalate",
    ast.RouteDecl: "route",
    ast.BiasDecl: "bias",
    ast.DriftDecl: "drift",
}


@dataclass(frozen=True, slots=True)
class DeclItem:
    kind: str
    id: str
    file: str
    line: int

    def where(self) -> str:
        return f"{display_path(self.file)}:{self.line}"


@dataclass(frozen=True, slots=True)
class ClauseItem:
    decl_id: str
    text: str
    file: str
    line: int
    col: int

    def where(self) -> str:
        return f"{display_path(self.file)}:{self.line}:{self.col}"


@dataclass(frozen=True)
class CoverageReport:
    """Every item with whether a test exercised it; percentages over each kind."""

    decls: tuple[tuple[DeclItem, bool], ...]
    clauses: tuple[tuple[ClauseItem, bool], ...]

    @staticmethod
    def _pct(items: Sequence[tuple[Any, bool]]) -> float:
        return 100.0 if not items else 100.0 * sum(1 for _, hit in items if hit) / len(items)

    @property
    def decl_percent(self) -> float:
        return self._pct(self.decls)

    @property
    def clause_percent(self) -> float:
        return self._pct(self.clauses)

    @property
    def missed_decls(self) -> list[DeclItem]:
        return [d for d, hit in self.decls if not hit]

    @property
    def missed_clauses(self) -> list[ClauseItem]:
        return [c for c, hit in self.clauses if not hit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "declarations": {"covered": len(self.decls) - len(self.missed_decls), "total": len(self.decls),
                             "percent": round(self.decl_percent, 2)},
            "clauses": {"covered": len(self.clauses) - len(self.missed_clauses), "total": len(self.clauses),
                        "percent": round(self.clause_percent, 2)},
            "missed_declarations": [{"kind": d.kind, "id": d.id, "file": d.file, "line": d.line} for d in self.missed_decls],
            "missed_clauses": [{"in": c.decl_id, "clause": c.text, "file": c.file, "line": c.line, "col": c.col}
                               for c in self.missed_clauses],
        }


def display_path(path: str) -> str:
    """A path relative to the working folder when it lies inside it."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return rel if not rel.startswith("..") else path


def _key(file: str, line: int, col: int = 0) -> tuple[str, int, int]:
    return (os.path.realpath(file), line, col)


def leaves(expr: ast.Expr | None) -> Iterator[ast.Expr]:
    """The single conditions of an expression: comparisons and bare values, left to right."""
    if expr is None:
        return
    if isinstance(expr, (ast.And, ast.Or)):
        for item in expr.items:
            yield from leaves(item)
    elif isinstance(expr, ast.Not):
        yield from leaves(expr.operand)
    else:
        yield expr


def _conditions(decl: Any) -> tuple[ast.Expr | None, ...]:
    return (decl.when, decl.unless) if isinstance(decl, ast.RuleDecl) else (getattr(decl, "when", None),)


def items_of(files: Iterable[ast.PolicyFile]) -> tuple[list[DeclItem], list[ClauseItem]]:
    """Every coverable declaration and clause of ``files``."""
    decls: list[DeclItem] = []
    clauses: list[ClauseItem] = []
    for f in files:
        for decl in f.decls:
            kind = _KINDS.get(type(decl))
            if kind is None:
                continue
            decl_id = f"{f.package.value}.{decl.name.value}"  # type: ignore[union-attr]
            decls.append(DeclItem(kind, decl_id, decl.span.file, decl.span.line))
            for cond in _conditions(decl):
                for leaf in leaves(cond):
                    s = leaf.span
                    clauses.append(ClauseItem(decl_id, expr_text(leaf), s.file, s.line, s.col))
    return decls, clauses


class _Tracker:
    """What the tests of one loaded policy exercised."""

    def __init__(self, policy: Any) -> None:
        from ..budgets import InMemoryLedger
        from ..evaluate import Evaluator

        self.policy = policy
        self.compiled = policy.compiled
        self.evaluator = Evaluator(policy.compiled, policy_hash=policy.policy_hash, ledger=InMemoryLedger())
        ps = policy.policy_set
        normal = schema_normalisers(ps)  # as the engine compiles: constants meet attributes normalised alike
        self.hit_decls: set[str] = set()
        self.hit_clauses: set[tuple[str, int, int]] = set()
        # (leaf span key, predicate, rule declaration or None) for every clause not yet seen to hold
        self.pending: list[tuple[tuple[str, int, int], Any, Any]] = []
        for items in (ps.rules, ps.residencies, ps.escalations, ps.routes):
            for scoped in items:
                for cond in _conditions(scoped.decl):
                    for leaf in leaves(cond):
                        pred = compile_expr(ps.substitute(scoped.package, leaf), ps.consts.get(scoped.package, {}),
                                            normal)
                        s = leaf.span
                        rule = scoped.decl if isinstance(scoped.decl, ast.RuleDecl) else None
                        self.pending.append((_key(s.file, s.line, s.col), pred, rule))

    def observe(self, request: Mapping[str, Any], decision: Any, now: Any = None) -> None:
        """Mark what ``decision`` exercised; clauses are re-read at the case's ``now`` (``age of``)."""
        d = decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
        self.hit_decls.update(r["rule"] for r in d.get("reasons", ()))
        for o in d.get("obligations", ()):
            self.hit_decls.add(o.get("gate") or o.get("budget") or "")
        ctx = self.evaluator.context(dict(request), now)
        if isinstance(ctx, Decision):
            return  # malformed request or undeclared agent: no rule was reached
        contexts = [ctx]
        if ctx.rid is None and ctx.kind == "model" and ctx.action == "invoke":
            route = next((r for r in self.compiled.routes if holds(r.when, ctx)), None)
            if route is not None:
                self.hit_decls.add(route.id)
                contexts += [ctx.with_resource(m, self.compiled.registry.get(m)) for m in route.prefer]
        still = []
        for key, pred, rule in self.pending:
            if any(self._reaches(rule, c) and holds(pred, c) for c in contexts):
                self.hit_clauses.add(key)
            else:
                still.append((key, pred, rule))
        self.pending = still

    @staticmethod
    def _reaches(decl: ast.RuleDecl | None, c: Any) -> bool:
        """Whether a rule is about this request's principal, action, kind and resource id."""
        if decl is None:
            return True  # residency, gates and routes apply to every request
        who = decl.principal
        if who.kind == "role" and (who.name is None or who.name.value not in c.roles):
            return False
        if who.kind == "agent" and (c.ptype != "agent" or who.name is None or c.pid != who.name.value):
            return False
        actions = {a.value for a in decl.actions}
        if not actions & {"*", "any", c.action}:
            return False
        if decl.resource_kind.value not in ("*", "any", c.kind):
            return False
        pattern = decl.resource_pattern
        return pattern in ("*", "**") or (c.rid is not None and glob_match(pattern, c.rid))


class CoverageCollector:
    """An observer for the runner that remembers what every tested decision exercised."""

    def __init__(self) -> None:
        self._trackers: dict[int, _Tracker] = {}

    def __call__(self, policy: Any, request: Mapping[str, Any], decision: Any, now: Any = None) -> None:
        tracker = self._trackers.get(id(policy.compiled))
        if tracker is None:
            tracker = self._trackers[id(policy.compiled)] = _Tracker(policy)
        tracker.observe(request, decision, now)

    def monitored(self, policy: Any, rule_id: str) -> None:
        """A monitor case judged bias or drift rule ``rule_id`` of ``policy``."""
        tracker = self._trackers.get(id(policy.compiled))
        if tracker is None:
            tracker = self._trackers[id(policy.compiled)] = _Tracker(policy)
        tracker.hit_decls.add(rule_id)

    def report(self, also_files: Sequence[str] = ()) -> CoverageReport:
        """Coverage over every policy file a test loaded plus ``also_files`` (tested or not)."""
        files: dict[str, ast.PolicyFile] = {}
        hit_decls: set[tuple[str, str]] = set()
        hit_clauses: set[tuple[str, int, int]] = set()
        for t in self._trackers.values():
            for f in t.policy.policy_set.files:
                files.setdefault(os.path.realpath(f.path), f)
            for scoped in _scoped(t.policy.policy_set):
                if scoped.id in t.hit_decls:
                    hit_decls.add((os.path.realpath(scoped.file), scoped.id))
            hit_clauses |= t.hit_clauses
        missing = [p for p in also_files if os.path.realpath(p) not in files]
        if missing:
            from ..loader import load_files

            for f in load_files(missing).files:  # files that fail to parse are reported by `check`
                files.setdefault(os.path.realpath(f.path), f)
        decls, clauses = items_of(sorted(files.values(), key=lambda f: display_path(f.path)))
        return CoverageReport(
            tuple((d, (os.path.realpath(d.file), d.id) in hit_decls) for d in decls),
            tuple((c, _key(c.file, c.line, c.col) in hit_clauses) for c in clauses),
        )


def _scoped(ps: Any) -> Iterator[Any]:
    for items in (ps.rules, ps.residencies, ps.budgets, ps.escalations, ps.routes, ps.biases, ps.drifts):
        yield from items
