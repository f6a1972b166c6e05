"""Conditions compiled to Python closures over ``Ctx``, the request as rules read it.

Conditions fail closed. A comparison that reads a missing attribute (absent or
JSON ``null``), or values of different types (``"95" > 80``, ``1 == true``,
``["x"] == "x"``), raises ``ConditionError`` instead of quietly being false;
the evaluator decides what an error means where the condition sits (see
``evaluate.py`` and docs/engine.md). ``has`` tests presence and never errors. Constants are
folded (list consts spliced into lists, as the checker resolves them) and list
membership becomes a set lookup. Also here: readable text of a condition and the
paths it reads (for ``--explain``), and the actions a condition is limited to.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from datetime import datetime, timezone, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from collections.abc import Callable, Mapping
from typing import Any

from . import ast
from .format import format_expr
from .schema import attribute_key, timestamp_ok

class Ctx:
    """The request as compiled closures read it (built by ``evaluate``; internal)."""

    __slots__ = (
        "pid", "ptype", "roles", "pattrs", "action", "kind", "rid", "rattrs", "reg",
        "data", "context", "approvals", "now",
    )

    def __init__(self, pid: str, ptype: str, roles: frozenset[str], pattrs: dict, action: str,
                 kind: str, rid: str | None, rattrs: dict, reg: dict | None, data: dict,
                 context: dict, approvals: tuple, now: float | None = None) -> None:
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
        self.now = now  # the decision's clock (epoch seconds) for ``age of``; None: the current time

    def with_resource(self, rid: str, reg: dict | None) -> Ctx:
        """The same request about another resource id (routing candidates, reroutes)."""
        return Ctx(self.pid, self.ptype, self.roles, self.pattrs, self.action, self.kind, rid,
                   self.rattrs, reg, self.data, self.context, self.approvals, self.now)


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


def _path_getter(path: ast.Path, step: Callable[[str], str] | None = None) -> Getter:
    """A closure reading one request attribute; ``None`` means missing.

    ``step`` is the attribute's schema normalisation, given where the request's value
    is normalised: a declared model's registry value (which wins over the request's)
    is then read normalised too, as the constants it is compared with are.
    """
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
            if step is not None:
                folded: dict[str, str] = {}  # registry strings, normalised once each

                def resource_attr_normalised(c: Ctx) -> Any:
                    reg = c.reg
                    if reg is not None and key in reg:
                        v = reg[key]
                        if v.__class__ is not str:
                            return v
                        n = folded.get(v)
                        if n is None:
                            n = folded[v] = step(v)
                        return n
                    return c.rattrs.get(key)

                return resource_attr_normalised

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
    if isinstance(expr, ast.Duration):  # compared with ``age of ...``, which is in seconds too
        return True, expr.seconds
    if isinstance(expr, ast.ConstRef) and expr.name in consts:
        return _literal_value(consts[expr.name], consts)
    if isinstance(expr, ast.Record):  # a mapping proxy: read-only, like the tuples lists become
        entries = {}
        for key, item in expr.entries:
            ok, v = _literal_value(item, consts)
            if not ok:
                return False, None
            entries[key] = v
        return True, MappingProxyType(entries)
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


def compile_value(expr: ast.Expr, consts: Mapping[str, ast.Expr], step: Callable[[str], str] | None = None) -> Getter:
    """A closure reading a value; ``step`` normalises its constants (literals, consts, list items, record entries)."""
    ok, value = _literal_value(expr, consts)
    if ok:
        if step is not None:
            value = _normal_const(value, step)
        return lambda c: value
    if isinstance(expr, ast.Path):
        return _path_getter(expr)
    if isinstance(expr, ast.TimeOf):
        return _time_getter(expr, compile_value(expr.operand, consts))
    if isinstance(expr, ast.Lookup):
        return _lookup_getter(expr, consts, step)
    if isinstance(expr, ast.ListExpr):
        parts = tuple((compile_value(i, consts, step), isinstance(i, ast.ConstRef)) for i in expr.items)

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


class ConditionError(Exception):
    """A condition that cannot be decided: an attribute it reads is missing or of the wrong type.

    Raised by compiled closures. The evaluator turns it into a decision error: a
    deny, residency or escalation condition that errors denies the request (and
    the error is listed in ``Decision.errors``); an allow rule or route whose
    condition errors does not apply. Either way the request fails closed.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_KINDS: dict[type, str] = {
    str: "string", bool: "bool", int: "number", float: "number",
    list: "list", tuple: "list", frozenset: "list", set: "list", dict: "object",
}


def value_kind(value: Any) -> str | None:
    """The policy-language type of a request value; None when missing (absent or JSON null)."""
    kind = _KINDS.get(value.__class__)
    if kind is not None or value is None:
        return kind
    for cls, name in _KINDS.items():  # subclasses (str enums, pydantic types)
        if isinstance(value, cls):
            return name
    return "object"


def _show(value: Any, depth: int = 0) -> str:
    """A short JSON-like rendering of a request value for error messages (bounded for deep values)."""
    kind = value_kind(value)
    if kind == "list":
        if depth >= 2:
            return "[...]"
        items = list(value)[:4] if not isinstance(value, (set, frozenset)) else sorted(map(str, value))[:4]
        text = "[" + ", ".join(_show(i, depth + 1) for i in items) + (", ..." if len(value) > 4 else "") + "]"
    elif kind == "object":
        text = "{...}"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, TypeError):
            text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _missing(label: str) -> ConditionError:
    return ConditionError(f"{label} is missing")


def _mismatch(label: str, expected: str, value: Any) -> ConditionError:
    if value is None:
        return _missing(label)
    return ConditionError(f"{label}: expected {expected}, got {value_kind(value)} {_show(value)}")


def _equal(left: Any, right: Any, llabel: str, rlabel: str) -> bool:
    """Strict equality: both present and of one type (``1 == true`` is an error, never true)."""
    lk, rk = value_kind(left), value_kind(right)
    if lk is None:
        raise _missing(llabel)
    if rk is None:
        raise _missing(rlabel)
    if lk != rk:
        raise ConditionError(f"{llabel}: expected {rk} to compare with {rlabel}, got {lk} {_show(left)}")
    if lk == "list":
        if isinstance(left, (set, frozenset)) or isinstance(right, (set, frozenset)):
            return _tagged(left) == _tagged(right)
        return _key(left) == _key(right)
    if lk == "object":
        return _key(left) == _key(right)
    return bool(left == right)


def _key(value: Any) -> Any:
    """``value`` as a hashable key, equal exactly when the values are equal as the language compares them.

    Types are kept apart at every depth (``true`` never equals ``1``, ``[true]`` never ``[1]``; ``1`` equals
    ``1.0``); lists and objects are keyed by their whole contents, never by a shortened text of them.
    """
    kind = _KINDS.get(value.__class__)
    if kind is not None and kind != "list" and kind != "object":
        return kind, value
    kind = value_kind(value)
    if kind == "list":
        if isinstance(value, (set, frozenset)):
            return "set", frozenset(_key(i) for i in value)
        return "list", tuple(_key(i) for i in value)
    if kind == "object":
        items = getattr(value, "items", None)
        if items is None:
            return "object", repr(value)
        return "object", frozenset((k, _key(v)) for k, v in items())
    return kind, value


def _tagged(items: Any) -> frozenset:
    """The keys (``_key``) of a list's members, so ``true`` never finds ``1`` and ``1`` finds ``1.0``."""
    return frozenset(_key(i) for i in items)


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _ordered(op: str, left: Any, right: Any, llabel: str, rlabel: str) -> bool:
    """``<`` and friends: two numbers; anything else is an error.

    Two strings are not ordered: ``"9" < "10"`` is false as text, and a number sent
    as a string (an identity provider's ``"9"``) would pass a deny written for numbers.
    """
    lk, rk = value_kind(left), value_kind(right)
    if lk is None:
        raise _missing(llabel)
    if rk is None:
        raise _missing(rlabel)
    if lk != "number":
        raise _mismatch(llabel, "number", left)
    if rk != "number":
        raise _mismatch(rlabel, "number", right)
    return bool(_ORDER[op](left, right))


def _member(value: Any, items: Any, llabel: str, rlabel: str) -> bool:
    """``value in items`` with strict types: the list must be a list and hold values of the value's type."""
    if value is None:
        raise _missing(llabel)
    if items is None:
        raise _missing(rlabel)
    if value_kind(items) != "list":
        raise _mismatch(rlabel, "list", items)
    if not items:
        return False
    kind = _KINDS.get(value.__class__)
    if kind is not None and kind != "list" and kind != "object":  # a scalar: one pass, no keys built
        of_kind = False
        for item in items:
            if (_KINDS.get(item.__class__) or value_kind(item)) == kind:
                if item == value:
                    return True
                of_kind = True
        if of_kind:
            return False
    kind = value_kind(value)
    kinds = {value_kind(i) for i in items}
    if kind not in kinds:
        raise _mismatch(llabel, " or ".join(sorted(k or "null" for k in kinds)), value)
    return _key(value) in _tagged(items)


def _need_list(value: Any, label: str) -> Any:
    if value is None:
        raise _missing(label)
    if value_kind(value) != "list":
        raise _mismatch(label, "list", value)
    return value


def _contains(op: str, items: Any, wanted: Any, llabel: str, rlabel: str) -> bool:
    """``contains`` (one value), ``contains any`` / ``contains all`` (a list): strict types, as ``in``."""
    _need_list(items, llabel)
    if op == "contains":
        if wanted is None:
            raise _missing(rlabel)
        return bool(items) and _member(wanted, items, rlabel, llabel)
    _need_list(wanted, rlabel)
    present = _tagged(items)
    for w in wanted:
        kind = value_kind(w)
        if kind is None or (items and kind not in {value_kind(i) for i in items}):
            raise _mismatch(rlabel, " or ".join(sorted({value_kind(i) or "null" for i in items})), w)
    found = [_key(w) in present for w in wanted]
    return any(found) if op == "contains any" else all(found)


def _like_regex(pattern: str) -> re.Pattern[str]:
    """``like`` globs: ``*`` any text (``/`` included), ``?`` one character; nothing else is special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z",
                      re.DOTALL)


def _text_test(op: str, text: Any, other: Any, llabel: str, rlabel: str) -> bool:
    if text is None:
        raise _missing(llabel)
    if other is None:
        raise _missing(rlabel)
    if text.__class__ is not str and value_kind(text) != "string":
        raise _mismatch(llabel, "string", text)
    if other.__class__ is not str and value_kind(other) != "string":
        raise _mismatch(rlabel, "string", other)
    if op == "starts with":
        return text.startswith(other)
    if op == "ends with":
        return text.endswith(other)
    return _like_regex(other).match(text) is not None


def networks(value: Any) -> tuple[Any, ...] | None:
    """CIDR blocks (``"10.0.0.0/8"`` or a list of them) as ``ipaddress`` networks; None if any is not one."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    out = []
    for item in items:
        if not isinstance(item, str):
            return None
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            return None
    return tuple(out)


def _in_networks(value: Any, blocks: tuple, llabel: str) -> bool:
    if value is None:
        raise _missing(llabel)
    if value.__class__ is not str:
        raise _mismatch(llabel, "an IP address", value)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ConditionError(f"{llabel}: expected an IP address, got {_show(value)}") from None
    # an IPv4-mapped IPv6 address (::ffff:10.1.2.3) is that IPv4 host (RFC 4291 2.5.5.2): in its IPv4 blocks too
    mapped = ip.ipv4_mapped if ip.version == 6 else None
    return any((ip.version == net.version and ip in net) or (mapped is not None and net.version == 4 and mapped in net)
               for net in blocks)


def timestamp(value: Any, label: str) -> datetime:
    """An RFC 3339 timestamp (with an offset) as an aware datetime; anything else is a condition error."""
    if value is None:
        raise _missing(label)
    if value.__class__ is not str:
        raise _mismatch(label, "an RFC 3339 timestamp", value)
    if not timestamp_ok(value):
        raise ConditionError(f"{label}: expected an RFC 3339 timestamp such as \"2026-03-10T09:00:00Z\", "
                             f"got {_show(value)}")
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T"))


_NOT_IANA = frozenset({"localtime", "Factory", "posixrules"})  # files beside the IANA names in a zoneinfo folder


def zone_info(name: str) -> tzinfo | None:
    """An IANA time zone (``"Europe/Paris"``) or ``"UTC"``; None when there is no such zone.

    Only IANA names: ``"localtime"`` is whatever zone the host is set to (a rule
    tested on a laptop in Paris would read UTC hours on a server), and the
    ``right/`` zones count leap seconds, so their hour turns ~27 s late.
    """
    if name == "UTC":
        return timezone.utc
    if name in _NOT_IANA or name.startswith(("posix/", "right/")):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _time_getter(expr: ast.TimeOf, operand: Getter) -> Getter:
    """``hour of``/``weekday of`` (in UTC or the zone) and ``age of`` (seconds until the decision's clock)."""
    label = _label(expr.operand)
    if expr.part == "age":
        def age(c: Ctx) -> float:
            at = timestamp(operand(c), label)
            now = time.time() if c.now is None else c.now
            return now - at.timestamp()

        return age
    zone = zone_info(expr.zone or "UTC")
    if zone is None:
        def no_zone(c: Ctx) -> Any:
            raise ConditionError(f"{expr.zone!r} is not a time zone")

        return no_zone
    if expr.part == "hour":
        return lambda c: timestamp(operand(c), label).astimezone(zone).hour
    return lambda c: ast.WEEKDAYS[timestamp(operand(c), label).astimezone(zone).weekday()]


def _lookup_getter(expr: ast.Lookup, consts: Mapping[str, ast.Expr], step: Callable[[str], str] | None = None) -> Getter:
    """``LIMITS[data.region]``: a missing or non-string key, or one the record does not hold, is an error.

    ``step`` normalises the entries (not the keys) where they meet a normalised attribute.
    """
    name = expr.table.name
    ok, table = _literal_value(expr.table, consts)
    if step is not None and ok and isinstance(table, MappingProxyType):
        table = MappingProxyType({k: _normal_const(v, step) for k, v in table.items()})
    key = compile_value(expr.key, consts)
    klabel = _label(expr.key)

    def lookup(c: Ctx) -> Any:
        k = key(c)
        if k is None:
            raise _missing(klabel)
        if k.__class__ is not str:
            raise _mismatch(klabel, "string", k)
        if not ok or not isinstance(table, MappingProxyType):
            raise ConditionError(f"{name} is not a record")
        if k not in table:
            raise ConditionError(f"{name}[{klabel}]: {name} has no entry {_show(k)}")
        return table[k]

    return lookup


def _label(expr: ast.Expr) -> str:
    return format_expr(expr)


# attribute key -> (its normalisation, the actions whose requests it normalises or None for all): schema_normalisers
Normal = Mapping[tuple[str, tuple[str, ...]], tuple[Callable[[str], str], "frozenset[str] | None"]]


def _normal_const(value: Any, normal: Callable[[str], str]) -> Any:
    """A constant in the normal form of the attribute it is compared with (strings, and strings in lists)."""
    if isinstance(value, str):
        return normal(value)
    if isinstance(value, tuple):
        return tuple(normal(v) if isinstance(v, str) else v for v in value)
    return value


def _normalised(path: ast.Expr, normal: Normal) -> tuple[Callable[[str], str], frozenset[str] | None] | None:
    key = attribute_key(path) if isinstance(path, ast.Path) else None
    return normal.get(key) if key is not None else None


def _compile_compare(expr: ast.Compare, consts: Mapping[str, ast.Expr], normal: Normal | None = None) -> Pred:
    """One comparison; where a schema normalises the attribute on one side, the constants on the other are too.

    The normalisation holds for the requests whose action the schema is for, so a
    schema with ``for action`` gives two closures, normalised and exact, picked by
    the request's action.
    """
    if expr.op == "has":
        probe = _path_getter(ast.Path(expr.left.root, (*expr.left.parts, *str(expr.right.value).split(".")), span=expr.span))  # type: ignore[union-attr]
        return lambda c: probe(c) is not None
    found = None
    if normal:
        lnorm, rnorm = _normalised(expr.left, normal), _normalised(expr.right, normal)
        if (lnorm is None) != (rnorm is None):  # an attribute compared with constants (two attributes: as read)
            found = (lnorm or rnorm, lnorm is not None)
    if found is None:
        return _compare(expr, consts)
    (step, actions), on_left = found
    folded = _compare(expr, consts, step, on_left)
    if actions is None:
        return folded
    exact = _compare(expr, consts)
    return lambda c: folded(c) if c.action in actions else exact(c)


def _compare(expr: ast.Compare, consts: Mapping[str, ast.Expr], step: Callable[[str], str] | None = None,
             on_left: bool = True) -> Pred:
    """``expr``'s closure; with ``step``, the attribute on the left (``on_left``) or right is normalised: the
    other side's constants and a declared model's registry value of it are normalised by ``step``."""
    op = expr.op
    lstep, rstep = (None, step) if on_left else (step, None)
    left = _path_getter(expr.left, step) if step is not None and on_left else compile_value(expr.left, consts, lstep)
    llabel, rlabel = _label(expr.left), _label(expr.right)
    rconst, rvalue = _literal_value(expr.right, consts)
    if rconst and rstep is not None:
        rvalue = _normal_const(rvalue, rstep)
    right_getter = _path_getter(expr.right, step) if step is not None and not on_left else \
        compile_value(expr.right, consts, rstep)
    if op in ast.IP_OPS:
        blocks = networks(rvalue) if rconst else None
        if blocks is not None:
            return lambda c: _in_networks(left(c), blocks, llabel)
        right_blocks = right_getter

        def in_cidr(c: Ctx) -> bool:
            found = networks(right_blocks(c))
            if found is None:
                raise ConditionError(f"{rlabel}: expected CIDR blocks such as \"10.0.0.0/8\"")
            return _in_networks(left(c), found, llabel)

        return in_cidr
    if op in ast.SET_OPS:
        if rconst:
            return lambda c: _contains(op, left(c), rvalue, llabel, rlabel)
        right_value = right_getter
        return lambda c: _contains(op, left(c), right_value(c), llabel, rlabel)
    if op in ast.STRING_OPS:
        if rconst and isinstance(rvalue, str):
            if op == "like":
                match = _like_regex(rvalue).match

                def like(c: Ctx) -> bool:
                    v = left(c)
                    if v.__class__ is str:
                        return match(v) is not None
                    return _text_test(op, v, rvalue, llabel, rlabel)

                return like
            test = str.startswith if op == "starts with" else str.endswith

            def affix(c: Ctx) -> bool:
                v = left(c)
                if v.__class__ is str:
                    return test(v, rvalue)
                return _text_test(op, v, rvalue, llabel, rlabel)

            return affix
        right_text = right_getter
        return lambda c: _text_test(op, left(c), right_text(c), llabel, rlabel)
    if op in ("in", "not in"):
        negate = op == "not in"
        if rconst and isinstance(rvalue, tuple):
            kinds = {value_kind(v) for v in rvalue}
            if kinds == {"string"}:
                strings = frozenset(rvalue)

                def in_strings(c: Ctx) -> bool:
                    v = left(c)
                    if v.__class__ is str:
                        return (v in strings) != negate
                    return _member(v, rvalue, llabel, rlabel) != negate

                return in_strings

            keys = _tagged(rvalue)  # the constant's members, keyed once (``_member`` keys them per call)

            def in_const(c: Ctx) -> bool:
                v = left(c)
                kind = _KINDS.get(v.__class__)
                if kind is not None and kind in kinds and kind != "list" and kind != "object":
                    return ((kind, v) in keys) != negate
                return _member(v, rvalue, llabel, rlabel) != negate

            return in_const
        right = right_getter

        def in_value(c: Ctx) -> bool:
            return _member(left(c), right(c), llabel, rlabel) != negate

        return in_value
    if op in ("==", "!="):
        negate = op == "!="
        if rconst and not isinstance(rvalue, tuple):
            cls = rvalue.__class__
            if cls is int or cls is float:
                def eq_number(c: Ctx) -> bool:
                    v = left(c)
                    if v.__class__ is int or v.__class__ is float:
                        return (v == rvalue) != negate
                    return _equal(v, rvalue, llabel, rlabel) != negate

                return eq_number

            def eq_const(c: Ctx) -> bool:
                v = left(c)
                if v.__class__ is cls:
                    return (v == rvalue) != negate
                return _equal(v, rvalue, llabel, rlabel) != negate

            return eq_const
        right = right_getter

        def eq_value(c: Ctx) -> bool:
            return _equal(left(c), right(c), llabel, rlabel) != negate

        return eq_value
    cmp = _ORDER[op]
    if rconst and isinstance(rvalue, (int, float)) and not isinstance(rvalue, bool):
        bound = rvalue
        number_cmp = {
            "<": lambda v: v < bound, "<=": lambda v: v <= bound,
            ">": lambda v: v > bound, ">=": lambda v: v >= bound,
        }[op]

        def order_number(c: Ctx) -> bool:
            v = left(c)
            if v.__class__ is int or v.__class__ is float:
                return number_cmp(v)
            return _ordered(op, v, bound, llabel, rlabel)

        return order_number
    right = right_getter

    def order_value(c: Ctx) -> bool:
        v = left(c)
        r = right(c)
        if (v.__class__ is int or v.__class__ is float) and (r.__class__ is int or r.__class__ is float):
            return bool(cmp(v, r))
        return _ordered(op, v, r, llabel, rlabel)

    return order_value


def _joined(items: tuple[Pred, ...], empty: Pred, two: Callable[[Pred, Pred], Pred],
            three: Callable[[Pred, Pred, Pred], Pred]) -> Pred:
    """``items`` joined left to right by the closures ``two`` and ``three`` build (groups of three, then pairs).

    Plain closures, not a generator under ``all``/``any`` (~2x): the builders run at
    compile time only, and a decision calls what they return.
    """
    if not items:
        return empty
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return two(*items)
    if len(items) == 3:
        return three(*items)
    return two(_joined(items[:3], empty, two, three), _joined(items[3:], empty, two, three))


def _all_of(items: tuple[Pred, ...]) -> Pred:
    """``items`` joined by ``and``, left to right, short-circuiting."""
    return _joined(items, _true, lambda a, b: lambda c: a(c) and b(c),
                   lambda a, b, d: lambda c: a(c) and b(c) and d(c))


def _any_of(items: tuple[Pred, ...]) -> Pred:
    """``items`` joined by ``or``, left to right, short-circuiting."""
    return _joined(items, lambda c: False, lambda a, b: lambda c: a(c) or b(c),
                   lambda a, b, d: lambda c: a(c) or b(c) or d(c))


def compile_expr(expr: ast.Expr | None, consts: Mapping[str, ast.Expr], normal: Normal | None = None) -> Pred:
    """Turn a condition into a closure ``Ctx -> bool``; it raises ``ConditionError`` and nothing else.

    ``normal`` maps schema attributes to their normalisation: constants compared
    with such an attribute are normalised the same way (``"DE"`` meets ``"de"``).
    """
    if expr is None:
        return _true
    if isinstance(expr, ast.Compare):
        return _compile_compare(expr, consts, normal)
    if isinstance(expr, ast.And):
        return _all_of(tuple(compile_expr(i, consts, normal) for i in expr.items))
    if isinstance(expr, ast.Or):
        return _any_of(tuple(compile_expr(i, consts, normal) for i in expr.items))
    if isinstance(expr, ast.Not):
        inner = compile_expr(expr.operand, consts, normal)
        return lambda c: not inner(c)
    ok, value = _literal_value(expr, consts)
    if ok:
        result = value is True
        return lambda c: result
    getter = compile_value(expr, consts)
    label = _label(expr)

    def boolean(c: Ctx) -> bool:
        v = getter(c)
        if v is True or v is False:
            return v
        raise _mismatch(label, "bool", v)

    return boolean


def holds(pred: Pred, c: Ctx) -> bool:
    """``pred(c)``, with a condition error read as "does not hold" (allow rules, routes, coverage)."""
    try:
        return pred(c)
    except ConditionError:
        return False


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
        elif isinstance(e, (ast.Not, ast.TimeOf)):
            walk(e.operand)
        elif isinstance(e, ast.Lookup):
            walk(e.key)

    walk(expr)
    return tuple(found.values())
