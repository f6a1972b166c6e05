"""Drop or hash payload fields before they are written, so PII never lands in the log.

Fields are named by RFC 6901 JSON pointers into the payload (``/request/data/ssn``),
as in OPA's decision-log masking; a segment ``*`` matches every key of an object or
every item of a list. The configured pointers that matched are recorded in the
payload itself under ``_masked`` (``{"drop": [...], "hash": [...]}``), as written
(with their ``*``), so an auditor sees what was removed without seeing the values
or the names of the keys a ``*`` matched.

Masking is applied by the audit writer (``AuditLog.append``) to every record of
every event type (and to its ``actor`` and ``workflow`` columns where they repeat
a value the mask hid: ``hidden``), on the canonical shape of a request: attributes written beside
a principal's or resource's ``id`` (``{"id": "sue", "email": ...}``) are what the
engine reads as ``attrs``, so they are moved under ``attrs`` before the pointers
apply and ``/request/principal/attrs/email`` masks them. Which config applies is
resolved one way for every command (``masking_for``): ``--mask FILE``, else
``policyengine.mask.yaml`` beside the database, else none; the masks declared
in the loaded rule files (``mask data.customer.email hash``, see
``request_pointer``) apply together with it. Hashing is SHA-256 over the
value's canonical JSON; set ``salt_env`` to keep an HMAC key outside the config,
because an unsalted hash of a low-entropy value (an SSN, a birth date) can be
reversed by trying every value.

Config file (YAML)::

    drop:
      - /request/principal/attrs/email
    hash:
      - /request/data/customer_id
      - /request/context/people/*/name
    salt_env: POLICYENGINE_MASK_SALT   # optional
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .canonical import CanonicalJSONError, canonical_bytes
from .errors import AuditError

MASKED_KEY = "_masked"


def parse_pointer(pointer: str, where: str = "masking") -> tuple[str, ...]:
    """Split an RFC 6901 pointer into unescaped segments (``~1`` is ``/``, ``~0`` is ``~``)."""
    if not pointer.startswith("/"):
        raise AuditError(f"{where}: JSON pointer {pointer!r} must start with '/'")
    return tuple(seg.replace("~1", "/").replace("~0", "~") for seg in pointer[1:].split("/"))


def _pointer_text(segments: tuple[str, ...]) -> str:
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


@dataclass(frozen=True)
class Masking:
    """Which payload fields to drop and which to replace by a hash."""

    drop: tuple[tuple[str, ...], ...] = ()
    hash: tuple[tuple[str, ...], ...] = ()
    salt: bytes | None = None

    @property
    def empty(self) -> bool:
        return not self.drop and not self.hash

    def hash_value(self, value: Any) -> str:
        try:
            data = canonical_bytes(value)
        except CanonicalJSONError:  # no canonical JSON (a lone surrogate, an integer beyond 2^53): hash its JSON
            data = json.dumps(value, sort_keys=True, ensure_ascii=True, default=repr).encode("ascii")
        if self.salt:
            return "hmac-sha256:" + hmac.new(self.salt, data, hashlib.sha256).hexdigest()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def apply(self, payload: dict[str, Any], hidden: dict[str, str | None] | None = None) -> dict[str, Any]:
        """Return a masked copy of ``payload`` (the caller's dict is never changed).

        ``hidden``, when given, receives each string the mask hid, mapped to what
        a column showing it must show instead: its hash where it was hashed as a
        whole, else None (dropped, or a part of a hashed object or list). A masked
        value quoted elsewhere in the payload (a decision's errors and reasons
        quote the request: ``context.ssn: expected number, got string "..."``) is
        replaced there by the same (``(masked)`` for None): ``scrub``.
        """
        if self.empty:
            return payload
        if hidden is None:
            hidden = {}
        values: dict[Any, str | None] = {}
        dropped: list[str] = []
        hashed: list[str] = []
        result = self._mask(payload, hidden, values, dropped, hashed)
        if values:
            result = scrub(result, values)
        if dropped or hashed:
            result = dict(result)
            result[MASKED_KEY] = {"drop": sorted(set(dropped)), "hash": sorted(set(hashed))}
        return result

    def _mask(self, payload: dict[str, Any], hidden: dict[str, str | None], values: dict[Any, str | None],
              dropped: list[str], hashed: list[str]) -> Any:
        """``apply`` without the scrub and the ``_masked`` note; the pointers that matched go to the lists."""
        request = payload.get("request")
        if isinstance(request, list):  # a body of several would-be requests, logged as sent: each masked as one
            items = [self._mask({"request": item}, hidden, values, dropped, hashed)["request"] for item in request]
            payload = {**payload, "request": items}
        result: Any = canonical_request_shape(payload)
        for segments in self.hash:
            hits: list[Any] = []
            result = _rewrite(result, segments, self.hash_value, hits)
            result = _rewrite_beside(result, segments, self.hash_value, hits)
            if hits:
                hashed.append(_pointer_text(segments))  # as configured: a ``*`` never lists the keys it matched
                _hide(hits, hidden, values, self.hash_value)
        for segments in self.drop:
            hits = []
            result = _rewrite(result, segments, None, hits)
            result = _rewrite_beside(result, segments, None, hits)
            if hits:
                dropped.append(_pointer_text(segments))
                _hide(hits, hidden, values, None)
        return result


def canonical_request_shape(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its ``request``'s principal and resource in the shape the engine reads.

    Keys beside ``id`` other than the known ones are attributes (``attrs`` wins
    on a clash, as in ``policyengine.evaluate``); they move under ``attrs`` so
    that pointers such as ``/request/principal/attrs/email`` find them. Beside
    an ``attrs`` that is not an object they stay (``_rewrite_beside`` masks them there).
    """
    request = payload.get("request")
    if not isinstance(request, dict):
        return payload
    from ..evaluate import PRINCIPAL_KEYS, RESOURCE_KEYS  # the engine's own notion of the shape

    changed = dict(request)
    for part, known in (("principal", PRINCIPAL_KEYS), ("resource", RESOURCE_KEYS)):
        node = request.get(part)
        if not isinstance(node, dict):
            continue
        extra = {k: v for k, v in node.items() if k not in known}
        attrs = node.get("attrs")
        if not extra or (attrs is not None and not isinstance(attrs, dict)):
            continue
        changed[part] = {**{k: v for k, v in node.items() if k in known}, "attrs": {**extra, **(attrs or {})}}
    return {**payload, "request": changed}


def _rewrite_beside(payload: dict[str, Any], segments: tuple[str, ...], replace: Any, applied: list[str]) -> Any:
    """Apply an ``attrs`` pointer to the attributes still beside ``id``: those ``canonical_request_shape``
    could not move, because the request's ``attrs`` is not an object (a malformed request is logged as sent)."""
    if len(segments) < 4 or segments[0] != "request" or segments[2] != "attrs":
        return payload
    request = payload.get("request")
    node = request.get(segments[1]) if isinstance(request, dict) else None
    if not isinstance(node, dict) or node.get("attrs") is None or isinstance(node["attrs"], dict):
        return payload
    from ..evaluate import PRINCIPAL_KEYS, RESOURCE_KEYS

    known = {"principal": PRINCIPAL_KEYS, "resource": RESOURCE_KEYS}.get(segments[1])
    if known is None:
        return payload
    extra = {k: v for k, v in node.items() if k not in known}
    masked = _rewrite(extra, segments[3:], replace, applied)
    if masked is extra:
        return payload
    return {**payload, "request": {**request, segments[1]: {**{k: v for k, v in node.items() if k in known},
                                                            **masked}}}


def _children(node: Any, segment: str) -> Iterator[tuple[Any, Any]]:
    """(key, child) pairs that ``segment`` selects in ``node``."""
    if isinstance(node, dict):
        if segment == "*":
            yield from list(node.items())
        elif segment in node:
            yield segment, node[segment]
    elif isinstance(node, list):
        if segment == "*":
            yield from enumerate(node)
        elif segment.isascii() and segment.isdecimal() and int(segment) < len(node):
            yield int(segment), node[int(segment)]


def _scalar(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _hide(hits: list[Any], hidden: dict[str, str | None], values: dict[Any, str | None], hash_value: Any) -> None:
    """Record the masked ``hits``: in ``hidden`` their strings (and keys), in ``values`` their strings and numbers;
    a value hashed as a whole maps to its hash, all else to None."""
    for hit in hits:
        if _scalar(hit):
            shown = hash_value(hit) if hash_value is not None else None
            values[hit] = shown
            if isinstance(hit, str):
                hidden[hit] = shown
            continue
        stack = [hit]  # an object or list masked as a whole: every key, string and number in it
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key, item in node.items():
                    hidden.setdefault(key, None)
                    stack.append(item)
            elif isinstance(node, list):
                stack.extend(node)
            elif _scalar(node):
                values.setdefault(node, None)
                if isinstance(node, str):
                    hidden.setdefault(node, None)


_SHOWN_WHOLE = 12  # a quoted value longer than this is also found cut short ("...", as error messages shorten it)
_BARE_MIN = 6  # a string this long is found unquoted too (shorter ones are ordinary words and digits)


def _quotations(values: dict[Any, str | None]) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, replacement) for each way a message may quote a masked value: as JSON (escaped or not), as
    Python's repr, cut short, or bare as a word of its own; a number standing alone."""
    found: list[tuple[re.Pattern[str], str]] = []
    bare: list[tuple[re.Pattern[str], str]] = []
    for value, replacement in values.items():
        shown = "(masked)" if replacement is None else replacement
        if not isinstance(value, str):
            text = json.dumps(value)
            if len(text.lstrip("-")) >= 4:
                bare.append((re.compile(r"(?<![\w.])" + re.escape(text) + r"(?![\w.])"), shown))
            continue
        if not value:
            continue
        for quoted in dict.fromkeys((json.dumps(value), json.dumps(value, ensure_ascii=False))):
            inner = quoted[1:-1]
            pattern = ('"' + re.escape(inner[:_SHOWN_WHOLE]) + '[^"]*"?') if len(inner) > _SHOWN_WHOLE \
                else re.escape(quoted)
            found.append((re.compile(pattern), f'"{shown}"'))
        found.append((re.compile(re.escape(repr(value))), f"'{shown}'"))
        if len(value) >= _BARE_MIN:  # a word of its own: not the inside of a rule id ("agents" in "hr.agents_read")
            bare.append((re.compile(r"(?<![\w.@-])" + re.escape(value) + r"(?![\w@-])"), shown))
    return found + bare


def scrub(node: Any, values: dict[Any, str | None]) -> Any:
    """``node`` with every quotation of a masked value in its strings replaced (keys are kept as they are)."""
    # every quotation holds one of these (a value's start, raw or JSON-escaped): most strings hold none of them
    needles: set[str] = set()
    for value in values:
        if isinstance(value, str):
            needles.update(n for n in (value[:_SHOWN_WHOLE], json.dumps(value)[1:_SHOWN_WHOLE + 1],
                                       json.dumps(value, ensure_ascii=False)[1:_SHOWN_WHOLE + 1]) if n)
        elif len(json.dumps(value).lstrip("-")) >= 4:  # shorter numbers are not looked for (``_quotations``)
            needles.add(json.dumps(value))
    quotations: list[tuple[re.Pattern[str], str]] = []

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            if not any(n in item for n in needles):
                return item
            if not quotations:
                quotations.extend(_quotations(values))
            for pattern, shown in quotations:
                item = pattern.sub(lambda _m, s=shown: s, item)
            return item
        if isinstance(item, dict):
            walked = {k: walk(v) for k, v in item.items()}
            return item if all(walked[k] is v for k, v in item.items()) else walked
        if isinstance(item, list):
            walked_list = [walk(v) for v in item]
            return item if all(a is b for a, b in zip(walked_list, item, strict=True)) else walked_list
        return item

    return walk(node)


def _rewrite(node: Any, segments: tuple[str, ...], replace: Any, applied: list[Any]) -> Any:
    """Copy ``node`` along the pointer, replacing (or dropping, if ``replace`` is None) its target; each
    target's value is appended to ``applied``."""
    matches = list(_children(node, segments[0]))
    if not matches:
        return node
    copy: Any = dict(node) if isinstance(node, dict) else list(node)
    drop_keys = []
    for key, child in matches:
        if len(segments) == 1:
            applied.append(child)
            if replace is None:
                drop_keys.append(key)
            else:
                copy[key] = replace(child)
        else:
            copy[key] = _rewrite(child, segments[1:], replace, applied)
    for key in sorted(drop_keys, key=lambda k: k if isinstance(k, int) else 0, reverse=True):
        del copy[key]
    return copy


NO_MASKING = Masking()

MASK_ACTIONS = ("drop", "hash")
MASK_ROOTS = ("context", "data", "principal", "resource")  # request parts a rule file's ``mask`` may name
_BUILT_IN = {"principal": ("id", "type", "roles"), "resource": ("id", "kind")}  # fields beside ``attrs``


def request_pointer(root: str, parts: tuple[str, ...]) -> str:
    """The log's pointer for a rule file's path: ``data.customer.email`` -> ``/request/data/customer/email``.

    A principal's or resource's attributes are read from ``attrs`` (the
    canonical shape ``Masking.apply`` masks), so ``principal.email`` is
    ``/request/principal/attrs/email``; their built-in fields (``principal.id``)
    are not under ``attrs``.
    """
    if root not in MASK_ROOTS or not parts:
        raise ValueError(f"'{'.'.join((root, *parts))}' is not a request field (write {', '.join(MASK_ROOTS)}.FIELD)")
    if root in _BUILT_IN and parts[0] not in _BUILT_IN[root] and parts[0] != "attrs":
        parts = ("attrs", *parts)
    return _pointer_text(("request", root, *parts))


def merged(first: Masking, second: Masking) -> Masking:
    """Both maskings' fields (each pointer once); the salt is ``first``'s, else ``second``'s."""
    return Masking(drop=tuple(dict.fromkeys((*first.drop, *second.drop))),
                   hash=tuple(dict.fromkeys((*first.hash, *second.hash))), salt=first.salt or second.salt)


def rule_masking(policy: Any) -> Masking:
    """The masks declared in rule files (``mask data.customer.email hash``) of a compiled policy or policy set."""
    policy_set = getattr(policy, "policy_set", policy)
    lists: dict[str, list[tuple[str, ...]]] = {"drop": [], "hash": []}
    for root, parts, action in getattr(policy_set, "mask_fields", ()):
        lists[action].append(parse_pointer(request_pointer(root, parts)))
    return Masking(drop=tuple(lists["drop"]), hash=tuple(lists["hash"]))


def mask_path_for(db: str | os.PathLike[str] | None, explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The masking config in force for a database: ``explicit``, else ``policyengine.mask.yaml`` beside it, else None.

    "Beside" is ``store.files.beside_database``: the database's real folder (a
    drop there removes evidence, so a link elsewhere must not choose it). A name
    there that is not a readable file (a dangling link, a folder) is returned
    too, so loading it fails: a config that is meant but missing never masks nothing.
    """
    if explicit is not None:
        return os.fspath(explicit)
    if db is None:
        return None
    from ..store.files import MASK_NAME, StoreError, beside_database  # duckdb only when a database is involved

    try:
        beside = beside_database(db, MASK_NAME)
    except StoreError as exc:
        raise AuditError(str(exc)) from None
    return os.fspath(beside) if os.path.lexists(beside) else None


def masking_for(db: str | os.PathLike[str] | None, explicit: str | os.PathLike[str] | None = None,
                policy: Any = None) -> Masking:
    """The ``Masking`` every command applies when writing to ``db``.

    The config file's fields (see ``mask_path_for``) together with the masks
    declared in ``policy``'s rule files, when the command has loaded rules.
    """
    path = mask_path_for(db, explicit)
    configured = load_masking(path) if path is not None else NO_MASKING
    return merged(configured, rule_masking(policy)) if policy is not None else configured


def load_masking(path: str | os.PathLike[str]) -> Masking:
    """Read a masking config (YAML); errors name the file."""
    from .. import yamlfile  # PyYAML only when a config is read: `check` imports this module for its masks

    where = str(path)
    try:
        data = yamlfile.load(path, "masking config")
    except yamlfile.YamlFileError as err:
        if err.message.startswith("masking config is not valid YAML: "):
            detail = err.message.removeprefix("masking config is not valid YAML: ")
            raise AuditError(f"{where}: not valid YAML (line {err.line}: {detail})") from None
        raise AuditError(str(err)) from None
    # A file that says nothing may be one cut short (a copy stopped, a disk full): masking nothing is then a
    # leak, so it takes an explicit "drop: []" to mean that.
    if data is None:
        raise AuditError(f"{where}: the masking config is empty, so nothing would be masked; list the fields "
                         "to drop or hash (write 'drop: []' to mask nothing on purpose)")
    if not isinstance(data, dict) or set(data) - {"drop", "hash", "salt_env"}:
        raise AuditError(f"{where}: expected a mapping with keys drop, hash, salt_env")
    lists = {}
    for name in ("drop", "hash"):
        if name in data and data[name] is None:
            raise AuditError(f"{where}: {name} lists no JSON pointer (a list cut short?); write '{name}: []' "
                             "for none")
        items = data.get(name, [])
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise AuditError(f"{where}: {name} must be a list of JSON pointers")
        lists[name] = tuple(parse_pointer(p, where) for p in items)
    salt = None
    if data.get("salt_env"):
        value = os.environ.get(str(data["salt_env"]))
        if not value:
            raise AuditError(f"{where}: environment variable {data['salt_env']} (salt_env) is not set")
        salt = value.encode("utf-8")
    return Masking(drop=lists["drop"], hash=lists["hash"], salt=salt)
