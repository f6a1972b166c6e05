"""Conditions compiled to Python closures over ``Ctx``, the request as rules read it.

A missing attribute (or JSON ``null``) makes every comparison false, and so
does a type mismatch such as ``"a" < 3``; no closure ever raises. Constants are
folded (list consts spliced into lists, as the checker resolves them) and list
membership becomes a set lookup. Also here: readable text of a condition and the
paths it reads (for ``--explain``), and the actions a condition is limited to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import ast
from .format import format_expr

class Ctx:
    """The request as compiled closures read it (built by ``evaluate``; internal)."""

    __slots__ = (
        "pid", "ptype", "roles", "pattrs", "action", "kind", "rid", "rattrs", "reg",
        "data", "context", "approvals",
    )

    def __init__(self, pid: str, ptype: str, roles: frozenset[str], pattrs: dict, action: str,
                 kind: str, rid: str | None, rattrs: dict, reg: dict | None, data: dict,
                 context: dict, approvals: tuple) -> None:
        self.pid = pid
        self.ptype = ptype
        self.roles = roles
        self.pattrs = pattrs
        self.action = action
        self.kind = kind
        self.rid = rid
        self.rattrs = rattrs
        self.reg = reg
        self.data = data
        self.context = context
        self.approvals = approvals

    def with_resource(self, rid: str, reg: dict | None) -> Ctx:
        """The same request about another resource id (routing candidates, reroutes)."""
        return Ctx(self.pid, self.ptype, self.roles, self.pattrs, self.action, self.kind, rid,
                   self.rattrs, reg, self.data, self.context, self.approvals)


Getter = Callable[[Ctx], Any]
Pred = Callable[[Ctx], bool]


def _true(_: Ctx) -> bool:
    return True


# --- expressions -------------------------------------------------------------------


def _dig(value: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _dict_getter(slot: str, parts: tuple[str, ...]) -> Getter:
    if not parts:
        return lambda c: getattr(c, slot)
    if len(parts) == 1:
        (key,) = parts
        if slot == "context":
            return lambda c: c.context.get(key)
        if slot == "data":
            return lambda c: c.data.get(key)
        return lambda c: getattr(c, slot).get(key)
    first, rest = parts[0], parts[1:]
    return lambda c: _dig(getattr(c, slot).get(first), rest)


def _path_getter(path: ast.Path) -> Getter:
    """A closure reading one request attribute; ``None`` means missing."""
    root, parts = path.root, path.parts
    if root == "action":
        return (lambda c: c.action) if not parts else (lambda c: None)
    if root in ("data", "context"):
        return _dict_getter(root, parts)
    if root == "principal":
        if parts == ("id",):
            return lambda c: c.pid
        if parts == ("type",):
            return lambda c: c.ptype
        if parts == ("roles",):
            return lambda c: c.roles
        if parts and parts[0] == "attrs":
            parts = parts[1:]
        return _dict_getter("pattrs", parts)
    if root == "resource":
        if parts == ("id",):
            return lambda c: c.rid
        if parts == ("kind",):
            return lambda c: c.kind
        if parts and parts[0] == "attrs":
            parts = parts[1:]
        if len(parts) == 1:
            (key,) = parts

            def resource_attr(c: Ctx) -> Any:
                reg = c.reg
                if reg is not None and key in reg:
                    return reg[key]
                return c.rattrs.get(key)

            return resource_attr
        return _dict_getter("rattrs", parts)
    # subject / outcome / output belong to bias and drift rules, not to requests
    return lambda c: None


def _literal_value(expr: ast.Expr, consts: Mapping[str, ast.Expr]) -> tuple[bool, Any]:
    """(True, value) when ``expr`` is constant; lists become tuples.

    A list const inside a list is spliced in (``[EU, "CH"]`` is one flat list),
    as the checker resolves const values.
    """
    if isinstance(expr, ast.Literal):
        return True, expr.value
    if isinstance(expr, ast.ConstRef) and expr.name in consts:
        return _literal_value(consts[expr.name], consts)
    if isinstance(expr, ast.ListExpr):
        values: list[Any] = []
        for item in expr.items:
            ok, v = _literal_value(item, consts)
            if not ok:
                return False, None
            if isinstance(item, ast.ConstRef) and isinstance(v, tuple):
                values.extend(v)
            else:
                values.append(v)
        return True, tuple(values)
    return False, None


def compile_value(expr: ast.Expr, consts: Mapping[str, ast.Expr]) -> Getter:
    ok, value = _literal_value(expr, consts)
    if ok:
        return lambda c: value
    if isinstance(expr, ast.Path):
        return _path_getter(expr)
    if isinstance(expr, ast.ListExpr):
        parts = tuple((compile_value(i, consts), isinstance(i, ast.ConstRef)) for i in expr.items)

        def list_value(c: Ctx) -> tuple:
            out: list[Any] = []
            for getter, splice in parts:
                v = getter(c)
                if splice and isinstance(v, tuple):
                    out.extend(v)
                else:
                    out.append(v)
            return tuple(out)

        return list_value
    if isinstance(expr, ast.ConstRef):  # unresolved: the checker reports it; never true here
        return lambda c: None
    pred = compile_expr(expr, consts)
    return pred


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _members(value: Any) -> Any:
    """Containers ``in`` may look into; anything else (including strings) has no members."""
    return value if isinstance(value, (tuple, list, frozenset, set)) else ()


def _compile_compare(expr: ast.Compare, consts: Mapping[str, ast.Expr]) -> Pred:
    op = expr.op
    left = compile_value(expr.left, consts)
    rconst, rvalue = _literal_value(expr.right, consts)
    if op in ("in", "not in"):
        negate = op == "not in"
        if rconst and isinstance(rvalue, tuple):
            try:
                members: Any = frozenset(rvalue)
            except TypeError:
                members = rvalue

            def in_const(c: Ctx) -> bool:
                v = left(c)
                if v is None:
                    return False
                try:
                    return (v in members) != negate
                except TypeError:
                    return False

            return in_const
        right = compile_value(expr.right, consts)

        def in_value(c: Ctx) -> bool:
            v = left(c)
            r = right(c)
            if v is None or r is None:
                return False
            try:
                return (v in _members(r)) != negate
            except TypeError:
                return False

        return in_value
    if op in ("==", "!="):
        negate = op == "!="
        if rconst:

            def eq_const(c: Ctx) -> bool:
                v = left(c)
                return v is not None and (v == rvalue) != negate

            return eq_const
        right = compile_value(expr.right, consts)

        def eq_value(c: Ctx) -> bool:
            v = left(c)
            r = right(c)
            return v is not None and r is not None and (v == r) != negate

        return eq_value
    cmp = _ORDER[op]
    if rconst:
        if isinstance(rvalue, (int, float)) and not isinstance(rvalue, bool):
            bound = rvalue
            number_cmp = {
                "<": lambda v: v < bound, "<=": lambda v: v <= bound,
                ">": lambda v: v > bound, ">=": lambda v: v >= bound,
            }[op]

            def order_number(c: Ctx) -> bool:
                v = left(c)
                if v.__class__ is int or v.__class__ is float:
                    return number_cmp(v)
                return False

            return order_number

        def order_const(c: Ctx) -> bool:
            v = left(c)
            if v is None or isinstance(v, bool):
                return False
            try:
                return bool(cmp(v, rvalue))
            except TypeError:
                return False

        return order_const
    right = compile_value(expr.right, consts)

    def order_value(c: Ctx) -> bool:
        v = left(c)
        r = right(c)
        if v is None or r is None or isinstance(v, bool) or isinstance(r, bool):
            return False
        try:
            return bool(cmp(v, r))
        except TypeError:
            return False

    return order_value


def compile_expr(expr: ast.Expr | None, consts: Mapping[str, ast.Expr]) -> Pred:
    """Turn a condition into a closure ``Ctx -> bool`` that never raises."""
    if expr is None:
        return _true
    if isinstance(expr, ast.Compare):
        return _compile_compare(expr, consts)
    if isinstance(expr, ast.And):
        items = tuple(compile_expr(i, consts) for i in expr.items)
        if len(items) == 2:
            a, b = items
            return lambda c: a(c) and b(c)
        return lambda c: all(p(c) for p in items)
    if isinstance(expr, ast.Or):
        items = tuple(compile_expr(i, consts) for i in expr.items)
        if len(items) == 2:
            a, b = items
            return lambda c: a(c) or b(c)
        return lambda c: any(p(c) for p in items)
    if isinstance(expr, ast.Not):
        inner = compile_expr(expr.operand, consts)
        return lambda c: not inner(c)
    ok, value = _literal_value(expr, consts)
    if ok:
        result = value is True
        return lambda c: result
    getter = compile_value(expr, consts)
    return lambda c: getter(c) is True


def action_guard(expr: ast.Expr | None, consts: Mapping[str, ast.Expr]) -> frozenset[str] | None:
    """The actions a condition can hold for, when it says so (``action == "pay" and ...``); None if any.

    Lets the evaluator skip gates about other actions without running them.
    """
    if isinstance(expr, ast.Compare) and isinstance(expr.left, ast.Path) and expr.left.root == "action" \
            and not expr.left.parts:
        ok, value = _literal_value(expr.right, consts)
        if ok and expr.op == "==" and isinstance(value, str):
            return frozenset((value,))
        if ok and expr.op == "in" and isinstance(value, tuple):
            return frozenset(v for v in value if isinstance(v, str))
        return None
    if isinstance(expr, ast.And):
        guards = [g for g in (action_guard(i, consts) for i in expr.items) if g is not None]
        return frozenset.intersection(*guards) if guards else None
    if isinstance(expr, ast.Or):
        guards = [action_guard(i, consts) for i in expr.items]
        if any(g is None for g in guards):
            return None
        return frozenset().union(*guards)  # type: ignore[arg-type]
    return None


def expr_text(expr: ast.Expr | None) -> str:
    """Source-like text of a condition for explanations: the formatter's own rendering."""
    return "true" if expr is None else format_expr(expr)


def expr_paths(expr: ast.Expr | None) -> tuple[ast.Path, ...]:
    """Every attribute path an expression reads, in order, without repeats."""
    found: dict[str, ast.Path] = {}

    def walk(e: ast.Expr | None) -> None:
        if isinstance(e, ast.Path):
            found.setdefault(e.dotted, e)
        elif isinstance(e, ast.Compare):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, (ast.And, ast.Or, ast.ListExpr)):
            for i in e.items:
                walk(i)
        elif isinstance(e, ast.Not):
            walk(e.operand)

    walk(expr)
    return tuple(found.values())
