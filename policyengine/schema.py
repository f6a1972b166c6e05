"""Request schemas: typed, normalised attributes, validated before any rule runs.

A ``schema`` declaration (see docs/language.md) gives attribute paths a type,
says which are required and how strings are normalised. This module turns the
checked declarations into

* ``SchemaSet.validator(action)``: one closure per action (built once, cached)
  that checks every declared attribute of a request, collects each problem as
  ``path: expected ..., got ...`` and returns the request's attribute dicts with
  normalised values (copied on write, never mutated);
* ``json_schema``: the same constraints as a JSON Schema (2020-12) for callers
  who validate requests before sending them (``policyengine schema``).

Attribute keys are canonical: ``principal.clearance`` and
``principal.attrs.clearance`` name the same attribute (as conditions read them).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import ast
from .format import format_number
from .identity import disguise

# root -> index of the attribute dict in the (pattrs, rattrs, data, context) tuple
_SLOTS = {"principal": 0, "resource": 1, "data": 2, "context": 3}
_BUILT_IN = {("principal", ("id",)), ("principal", ("type",)), ("principal", ("roles",)),
             ("resource", ("id",)), ("resource", ("kind",))}
_CACHE_LIMIT = 10_000
_MEMO_LIMIT = 4_096  # distinct strings remembered per attribute

NORMALISERS: dict[str, Callable[[str], str]] = {
    "casefold": str.casefold,
    "trim": str.strip,
    "nfkc": lambda s: unicodedata.normalize("NFKC", s),
}

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z")


def attribute_key(path: ast.Path) -> tuple[str, tuple[str, ...]] | None:
    """``(root, parts)`` of a declarable request attribute, or None (built in, bare root, other root)."""
    root, parts = path.root, path.parts
    if root not in _SLOTS:
        return None
    if root in ("principal", "resource") and parts[:1] == ("attrs",):
        parts = parts[1:]
    if not parts or (root, parts) in _BUILT_IN:
        return None
    return root, parts


def key_text(key: tuple[str, tuple[str, ...]]) -> str:
    return ".".join((key[0], *key[1]))


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One checked schema attribute: its canonical key, type and what is done to its strings."""

    key: tuple[str, tuple[str, ...]]
    type: str  # string | number | bool | timestamp | set | enum
    values: tuple[str, ...] = ()  # enum values as written
    required: bool = False
    normalise: tuple[str, ...] = ()
    minimum: int | float | None = None  # a number's bounds, inclusive (``min 0 max 1``)
    maximum: int | float | None = None

    @property
    def dotted(self) -> str:
        return key_text(self.key)

    def normal(self, text: str) -> str:
        for step in self.normalise:
            text = NORMALISERS[step](text)
        return text

    def expected(self) -> str:
        if self.type == "enum":
            return "one of " + ", ".join(f'"{v}"' for v in self.values)
        if self.type == "number" and (self.minimum is not None or self.maximum is not None):
            low, high = self.minimum, self.maximum
            if low is not None and high is not None:
                return f"a number from {format_number(low)} to {format_number(high)}"
            return f"a number >= {format_number(low)}" if low is not None else f"a number <= {format_number(high)}"
        return {"set": "a list of strings", "timestamp": "an RFC 3339 timestamp"}.get(self.type, self.type)

    def in_range(self, value: int | float) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)


@dataclass(frozen=True, slots=True)
class SchemaRule:
    """The attributes of one ``schema`` declaration and the actions it is for (empty: every request)."""

    actions: frozenset[str]
    attributes: tuple[AttributeSpec, ...]


def _kind(value: Any) -> str:
    from .conditions import value_kind

    return value_kind(value) or "null"


def _show(value: Any) -> str:
    from .conditions import _show as show

    return show(value)


def _escaped(text: str) -> str:
    """A disguised value as JSON with every non-ASCII character escaped: what it hides must show."""
    shown = json.dumps(text, ensure_ascii=True)
    return shown if len(shown) <= 80 else shown[:70] + '..."'


def timestamp_ok(text: str) -> bool:
    """An RFC 3339 date-time with an offset (schemas check it; ``hour of`` and ``age of`` read it)."""
    if not _RFC3339.match(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T"))
    except ValueError:
        return False
    return True


def _check_value(spec: AttributeSpec, value: Any, enum: frozenset[str]) -> tuple[Any, str | None]:
    """(the value as rules see it, None) or (value, the problem in words)."""
    t = spec.type
    if t == "number":
        if (value.__class__ is int or value.__class__ is float) and math.isfinite(value):
            if spec.in_range(value):
                return value, None
            return value, f"{spec.dotted}: expected {spec.expected()}, got {_show(value)}"
    elif t == "bool":
        if value is True or value is False:
            return value, None
    elif t == "set":
        if value.__class__ in (list, tuple) and all(i.__class__ is str for i in value):
            if spec.normalise:
                for item in value:
                    if (why := disguise(item)) is not None:
                        return value, f"{spec.dotted}: {_escaped(item)} {why}"
                return [spec.normal(i) for i in value], None
            return value, None
    elif value.__class__ is str:  # string, timestamp, enum
        if spec.normalise and (why := disguise(value)) is not None:
            return value, f"{spec.dotted}: {_escaped(value)} {why}"
        text = spec.normal(value) if spec.normalise else value
        if t == "string":
            return text, None
        if t == "timestamp":
            return (text, None) if timestamp_ok(text) else (text, f"{spec.dotted}: expected an RFC 3339 timestamp, "
                                                                    f"got {_show(value)}")
        if text in enum:
            return text, None
        return text, f"{spec.dotted}: expected {spec.expected()}, got {_show(value)}"
    return value, f"{spec.dotted}: expected {spec.expected()}, got {_kind(value)} {_show(value)}"


def _dig(value: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if value.__class__ is not dict and not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _put(container: dict, parts: tuple[str, ...], value: Any) -> dict:
    """A copy of ``container`` with ``parts`` set to ``value`` (intermediate dicts copied too)."""
    head = parts[0]
    out = dict(container)
    out[head] = value if len(parts) == 1 else _put(container.get(head) or {}, parts[1:], value)
    return out


Slots = tuple[Any, Any, Any, Any]
Validator = Callable[[Slots, list], Slots]


def _attribute_check(spec: AttributeSpec) -> Callable[[list, list], None]:
    """One attribute's check, compiled: reads, type-checks, normalises in place of the slot list."""
    slot = _SLOTS[spec.key[0]]
    parts = spec.key[1]
    enum = frozenset(spec.normal(v) for v in spec.values)
    dotted = spec.dotted
    single = parts[0] if len(parts) == 1 else None
    required = spec.required
    t = spec.type
    plain = not spec.normalise and t in ("string", "number", "bool")
    low = -math.inf if spec.minimum is None else spec.minimum
    high = math.inf if spec.maximum is None else spec.maximum
    cls = {"string": (str,), "number": (int, float), "bool": (bool,)}.get(t, ())

    memo: dict[str, tuple[Any, str | None]] = {}  # string -> (normalised, problem): enums repeat

    def check(slots: list, errors: list) -> None:
        container = slots[slot]
        value = container.get(single) if single is not None else _dig(container, parts)
        if value is None:
            if required:
                errors.append(f"{dotted}: missing (required {spec.expected()})")
            return
        if plain and value.__class__ in cls and (t != "number" or math.isfinite(value) and low <= value <= high):
            return  # the common case: already the declared type (in bounds), nothing to normalise
        if value.__class__ is str:
            found = memo.get(value)
            if found is None:
                found = _check_value(spec, value, enum)
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                memo[value] = found
            new, problem = found
        else:
            new, problem = _check_value(spec, value, enum)
        if problem is not None:
            errors.append(problem)
        elif new is not value and new != value:
            slots[slot] = _put(container, parts, new)

    return check


class SchemaSet:
    """Every schema of a policy set, compiled into one validator per action on first use."""

    def __init__(self, rules: tuple[SchemaRule, ...]) -> None:
        self.rules = rules
        self._validators: dict[str, Validator | None] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def specs(self, action: str | None = None) -> tuple[AttributeSpec, ...]:
        """The attributes checked for ``action`` (None: every declared attribute)."""
        return tuple(a for r in self.rules if action is None or not r.actions or action in r.actions
                     for a in r.attributes)

    def validator(self, action: str) -> Validator | None:
        found = self._validators.get(action, False)
        if found is not False:
            return found  # type: ignore[return-value]
        specs = self.specs(action)
        checks = tuple(_attribute_check(s) for s in specs)
        validate: Validator | None = None
        if checks:
            # a check of an optional attribute runs only when the request holds its first key, so a
            # request pays for the attributes it sends, not for every one declared; in declaration order
            always = [i for i, spec in enumerate(specs) if spec.required]
            by_key: list[dict[str, tuple[int, ...]]] = [{}, {}, {}, {}]
            for i, spec in enumerate(specs):
                if not spec.required:
                    found = by_key[_SLOTS[spec.key[0]]]
                    found[spec.key[1][0]] = (*found.get(spec.key[1][0], ()), i)
            keyed = tuple((slot, found) for slot, found in enumerate(by_key) if found)

            def validate(slots: Slots, errors: list) -> Slots:
                run = always.copy()
                for slot, found in keyed:
                    container = slots[slot]
                    if not container:
                        continue
                    if len(container) <= len(found):
                        for key in container:
                            these = found.get(key)
                            if these is not None:
                                run += these
                    else:
                        for key, these in found.items():
                            if key in container:
                                run += these
                if not run:
                    return slots
                run.sort()
                work = list(slots)
                for i in run:
                    checks[i](work, errors)
                return work[0], work[1], work[2], work[3]

        if len(self._validators) > _CACHE_LIMIT:
            self._validators.clear()
        self._validators[action] = validate
        return validate


def _spec(attr: ast.SchemaAttribute, consts: Mapping[str, ast.Expr]) -> AttributeSpec | None:
    from .conditions import _literal_value

    key = attribute_key(attr.path)
    if key is None:
        return None
    values: tuple[str, ...] = ()
    if attr.type == "enum" and attr.values is not None:
        ok, found = _literal_value(attr.values, consts)
        values = tuple(v for v in (found if ok and isinstance(found, tuple) else ()) if isinstance(v, str))
    return AttributeSpec(key, attr.type, values, attr.required, tuple(n.value for n in attr.normalise),
                         attr.minimum, attr.maximum)


def compile_schemas(ps: Any) -> SchemaSet:
    """The checked ``schema`` declarations of a policy set as a ``SchemaSet``."""
    rules = []
    for scoped in getattr(ps, "schemas", ()):
        consts = ps.consts.get(scoped.package, {})
        specs = tuple(s for s in (_spec(a, consts) for a in scoped.decl.attributes) if s is not None)
        rules.append(SchemaRule(frozenset(n.value for n in scoped.decl.actions), specs))
    return SchemaSet(tuple(rules))


_NORMALISERS_OF: dict[int, tuple[Any, dict]] = {}

# An attribute's normalisation and the actions whose requests it normalises (None: every action)
Normaliser = tuple[Callable[[str], str], "frozenset[str] | None"]


def schema_normalisers(ps: Any) -> dict[tuple[str, tuple[str, ...]], Normaliser]:
    """Attribute key -> (its normalisation, the actions it applies to or None for all), computed once per set.

    A schema ``for action pay`` normalises its attributes in ``pay`` requests only; in
    any other request the attribute is read as sent, so a constant compared with it
    must be too (``check`` rejects declaring one attribute with two normalisations).
    """
    found = _NORMALISERS_OF.get(id(ps))
    if found is not None and found[0] is ps:
        return found[1]
    out: dict[tuple[str, tuple[str, ...]], Normaliser] = {}
    for rule in compile_schemas(ps).rules:
        for spec in rule.attributes:
            if not spec.normalise:
                continue
            _, actions = out.get(spec.key, (None, frozenset()))
            if actions is not None:
                actions = actions | rule.actions if rule.actions else None
            out[spec.key] = (spec.normal, actions)
    if len(_NORMALISERS_OF) > 64:
        _NORMALISERS_OF.clear()
    _NORMALISERS_OF[id(ps)] = (ps, out)
    return out


# --- JSON Schema ------------------------------------------------------------------------------------

_ROOT_FIELDS = {"principal": "attrs", "resource": "attrs", "data": None, "context": None}


def _json_type(spec: AttributeSpec) -> dict[str, Any]:
    if spec.type == "number":
        bounds = {"minimum": spec.minimum, "maximum": spec.maximum}
        return {"type": "number", **{k: v for k, v in bounds.items() if v is not None}}
    if spec.type == "bool":
        return {"type": "boolean"}
    if spec.type == "set":
        return {"type": "array", "items": {"type": "string"}}
    if spec.type == "timestamp":
        return {"type": "string", "format": "date-time"}
    if spec.type == "enum":
        return {"type": "string", "enum": list(spec.values)}
    return {"type": "string"}


def _object(specs: tuple[AttributeSpec, ...]) -> dict[str, Any]:
    """The request fragment constraining ``specs``: nested objects with properties and required keys."""
    out: dict[str, Any] = {"type": "object", "properties": {}}
    for spec in specs:
        root, parts = spec.key
        sub = _ROOT_FIELDS[root]
        path = (root, *((sub,) if sub else ()), *parts)
        node = out
        for i, name in enumerate(path):
            last = i == len(path) - 1
            props = node.setdefault("properties", {})
            if last:
                props[name] = _json_type(spec)
            else:
                node = props.setdefault(name, {"type": "object", "properties": {}})
        if spec.required:
            node = out
            for name in path:
                req = node.setdefault("required", [])
                if name not in req:
                    req.append(name)
                node = node["properties"][name]
    return out


def json_schema(schemas: SchemaSet) -> dict[str, Any]:
    """A JSON Schema (2020-12) of the requests the schemas accept, action-scoped parts as if/then."""
    every = tuple(a for r in schemas.rules if not r.actions for a in r.attributes)
    doc: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                           "title": "policyengine request", **_object(every)}
    doc.setdefault("required", [])
    for field in ("principal", "action", "resource"):
        if field not in doc["required"]:
            doc["required"].append(field)
    doc["properties"].setdefault("action", {"type": "string"})
    scoped = [r for r in schemas.rules if r.actions]
    if scoped:
        doc["allOf"] = [{"if": {"properties": {"action": {"enum": sorted(r.actions)}}, "required": ["action"]},
                         "then": _object(r.attributes)} for r in scoped]
    return doc



def named_attributes(ps: Any) -> frozenset[tuple[str, str]]:
    """``(root, name)`` of every first-level request attribute the declarations of ``ps`` name (``data.origin``,
    ``context has review``, a schema's ``attribute``): what a caller's defaults may set, so that one nothing names,
    likely misspelt (``data.clasification``), can be refused rather than leave a rule reading nothing."""
    return frozenset((p.root, p.parts[0]) for p in ast.attribute_paths(ps.expression_roots()) if p.parts)
