"""What the checker can prove about conditions and glob patterns.

Kept apart from ``check`` because it is pure reasoning over expressions, with its
own tests: when a ``when`` can never hold (``contradiction``) and when one glob
matches every id another matches (``pattern_covers``). Both are sound, not
complete: what they claim is true under the evaluator's meaning; some true
claims are missed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import ast
from .format import format_expr
from .globs import glob_match
from .diagnostics import Span

GLOB_CHARS = frozenset("*?[")


def show(expr: ast.Expr) -> str:
    """An expression as written, for messages: the formatter's own rendering."""
    return format_expr(expr)


def kind_word(decl: object) -> str:
    """``RuleDecl`` -> ``rule``: the keyword a declaration is written with, for messages."""
    return type(decl).__name__.removesuffix("Decl").lower()


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard."""
    for i, ch in enumerate(pattern):
        if ch in GLOB_CHARS:
            return pattern[:i]
    return pattern


def pattern_covers(deny: str, allow: str) -> bool:
    """True when every resource id ``allow`` matches is also matched by ``deny``.

    Decided conservatively: equal patterns, ``*`` or ``**`` alone, a ``prefix**``
    deny over an allow starting with that prefix, or a literal allow id the deny
    glob matches.
    """
    if deny == allow or deny in ("*", "**"):
        return True
    if deny.endswith("**") and not (GLOB_CHARS & set(deny[:-2])):
        return allow.startswith(deny[:-2])
    if not (GLOB_CHARS & set(allow)):
        return glob_match(deny, allow)
    return False


# -- contradictions: conditions that no request can satisfy ---------------------------------
#
# Decided syntactically and pairwise over the comparisons of one conjunction, on
# comparisons of one attribute path with literals (consts resolved), with the
# evaluator's meaning, where a comparison "holds" only when it evaluates to true (a
# condition error, such as a missing attribute or 1 == true, never holds); values
# are compared as the evaluator compares them (1 == 1.0, but true equals only
# true), and where it would error a comparison is taken to hold, which can only
# miss a contradiction, never invent one. A pair is reported
# only when one of them is a plain ==, in or ordering, which holds only for a
# present scalar; for such a value ``not (x == v)`` is exactly ``x != v``. Sound,
# not complete: a reported contradiction is real; some real ones go unreported.

_Key = str | int | float | bool  # a literal value, compared the way the evaluator does
_NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<", "in": "not in", "not in": "in"}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True, slots=True)
class _Atom:
    path: str
    op: str
    value: _Key | tuple[_Key, ...]
    node: ast.Expr
    negated: bool  # written as ``not (...)``, op already inverted

    @property
    def anchors(self) -> bool:
        """True when holding implies the attribute is present and a scalar."""
        return not self.negated and self.op not in ("!=", "not in")


def contradiction(
    expr: ast.Expr, resolve: Callable[[ast.ConstRef], ast.Expr | None]
) -> tuple[Span, str] | None:
    """Where and why ``expr`` can never hold, or None when it may."""
    if isinstance(expr, ast.Literal):
        return (expr.span, "the condition is false") if expr.value is False else None
    if isinstance(expr, ast.Not):
        if isinstance(expr.operand, ast.Literal) and expr.operand.value is True:
            return expr.span, "the condition is 'not true'"
        return None
    if isinstance(expr, ast.Or):
        found = [contradiction(item, resolve) for item in expr.items]
        if all(f is not None for f in found):
            return expr.span, "no alternative can hold (" + "; ".join(f[1] for f in found if f) + ")"
        return None
    if not isinstance(expr, (ast.And, ast.Compare)):
        return None
    by_path: dict[str, list[ast.Expr]] = {}
    for item in conjuncts(expr):
        if not isinstance(item, (ast.Compare, ast.Not)) or isinstance(item, ast.Not) and not isinstance(
            item.operand, ast.Compare
        ):
            nested = contradiction(item, resolve)
            if nested is not None:
                return nested
            continue
        cmp = item.operand if isinstance(item, ast.Not) else item
        path = cmp.left if isinstance(cmp.left, ast.Path) else cmp.right
        if isinstance(path, ast.Path):
            by_path.setdefault(path.dotted, []).append(item)
        if cmp.op == "in" and item is cmp and _empty(cmp.right, resolve):
            return item.span, f"{show(item)} matches nothing"
    for items in by_path.values():
        if len(items) < 2:
            continue
        atoms: list[_Atom] = []
        for item in items:
            atom = _atom(item, resolve)
            if atom is None:
                continue
            for earlier in atoms:
                if (earlier.anchors or atom.anchors) and _clash(earlier, atom):
                    return item.span, f"{show(item)} contradicts {show(earlier.node)}"
            atoms.append(atom)
    return None


def _empty(expr: ast.Expr, resolve: Callable[[ast.ConstRef], ast.Expr | None]) -> bool:
    """Whether ``expr`` is a list with no items once consts are spliced in."""
    if isinstance(expr, ast.ConstRef):
        value = resolve(expr)
        return isinstance(value, ast.ListExpr) and not value.items
    return isinstance(expr, ast.ListExpr) and all(
        isinstance(i, ast.ConstRef) and _empty(i, resolve) for i in expr.items
    )


def conjuncts(expr: ast.Expr) -> Iterator[ast.Expr]:
    if isinstance(expr, ast.And):
        for item in expr.items:
            yield from conjuncts(item)
    else:
        yield expr


def _key(literal: ast.Expr) -> _Key | None:
    return literal.value if isinstance(literal, ast.Literal) else None


def _atom(expr: ast.Expr, resolve: Callable[[ast.ConstRef], ast.Expr | None]) -> _Atom | None:
    negate = False
    if isinstance(expr, ast.Not):
        negate, expr = True, expr.operand
    if not isinstance(expr, ast.Compare):
        return None
    op, left, right = expr.op, expr.left, expr.right
    if op == "has" or op in ast.SET_OPS or op in ast.STRING_OPS or op in ast.IP_OPS:
        return None  # presence, set and string tests constrain no single value here
    if isinstance(left, ast.ConstRef):
        left = resolve(left) or left
    if isinstance(right, ast.ConstRef):
        right = resolve(right) or right
    if not isinstance(left, ast.Path) and isinstance(right, ast.Path) and op in _FLIP:
        op, left, right = _FLIP[op], right, left
    if not isinstance(left, ast.Path):
        return None
    if negate:
        if op not in ("==", "!=", "in", "not in"):
            return None  # not (x < 5) also holds for a string x: no simple inverse
        op = _NEGATE[op]
    node: ast.Expr = ast.Not(expr, span=expr.span) if negate else expr
    if op in ("in", "not in"):
        if not isinstance(right, ast.ListExpr):
            return None
        items: list[ast.Expr] = []
        for item in right.items:
            value = resolve(item) if isinstance(item, ast.ConstRef) else item
            items.extend(value.items if isinstance(value, ast.ListExpr) else (value or item,))
        keys = [_key(i) for i in items]
        if any(k is None for k in keys):
            return None
        return _Atom(left.dotted, op, tuple(k for k in keys if k is not None), node, negate)  # a set would merge true and 1
    key = _key(right)
    if key is None or op in ("<", "<=", ">", ">=") and isinstance(key, bool):
        return None  # ordering against a boolean: a type error the checker reports, no contradiction
    return _Atom(left.dotted, op, key, node, negate)


def _holds(op: str, value: _Key | tuple[_Key, ...], x: _Key) -> bool:
    """Whether the literal ``x`` satisfies ``op value`` (missing-type comparisons are false)."""
    if op == "==":
        return _same(x, value)  # type: ignore[arg-type]
    if op == "!=":
        return not _same(x, value)  # type: ignore[arg-type]
    if op == "in":
        return any(_same(x, v) for v in value)  # type: ignore[union-attr]
    if op == "not in":
        return not any(_same(x, v) for v in value)  # type: ignore[union-attr]
    if not (_is_number(x) and _is_number(value) or isinstance(x, str) and isinstance(value, str)):
        return False
    return {"<": x < value, "<=": x <= value, ">": x > value, ">=": x >= value}[op]  # type: ignore[operator]


def _same(a: _Key, b: _Key) -> bool:
    """``==`` as the engine decides it: a boolean equals only a boolean (1 == true is false), 1 == 1.0."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _equals(value: _Key) -> tuple[_Key, ...]:
    """The values that ``==`` value in the engine: 1 is 1.0, but true is only true."""
    if isinstance(value, (str, bool)):
        return (value,)
    same: tuple[_Key, ...] = (value, float(value))
    if float(value).is_integer():
        same += (int(value),)
    return same


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clash(a: _Atom, b: _Atom) -> bool:
    for one, other in ((a, b), (b, a)):
        if one.op in ("==", "in"):
            values = (one.value,) if one.op == "==" else one.value
            return not any(_holds(other.op, other.value, x) for v in values for x in _equals(v))  # type: ignore[union-attr]
    lower = [x for x in (a, b) if x.op in (">", ">=")]
    upper = [x for x in (a, b) if x.op in ("<", "<=")]
    if len(lower) == 1 and len(upper) == 1:
        lo, hi = lower[0], upper[0]
        if not (_is_number(lo.value) and _is_number(hi.value)):
            return False
        lv, hv = lo.value, hi.value
        return lv > hv or (lv == hv and (lo.op == ">" or hi.op == "<"))  # type: ignore[operator]
    return False
