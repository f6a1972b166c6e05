"""Reading JSON text that others wrote: requests, workflow items, audit exports.

JSON parsers disagree in two places, and a governance engine must not guess in
either. A number may have no IEEE-754 double (``1e400``, ``NaN``, ``2**53 + 1``):
one reader rounds it, another refuses it, and the audit log cannot sign it. An
object may repeat a key: Python's ``json`` and orjson keep the last value,
other parsers the first, so a caller and the engine could read two different
requests from one text. This module is the one place that parses with both
kept visible (``DECODER``: such numbers come back as ``BadNumber``) and finds
repeated keys (``surely_unique_keys``, then ``repeated_key`` to name one).
What to do about them is the caller's: the engine denies that request, a
workflow refuses its input file, ``audit verify`` refuses the export.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .audit.canonical import MAX_SAFE_INTEGER, CanonicalJSONError, canonical_number

_CONSTANTS = ("NaN", "Infinity", "-Infinity")


class BadNumber:
    """A number in JSON text that has no IEEE-754 double, kept as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def why(self) -> str:
        """What is wrong with it, showing at most 40 characters of it."""
        if self.text in _CONSTANTS:
            return f"{self.text} is not a JSON number"
        text = self.text
        shown = text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} digits)"
        return f"number {shown} is out of range (numbers must be finite IEEE-754 doubles)"


_INF = float("inf")


def parse_float(text: str) -> float | BadNumber:
    """A JSON fraction or exponent number; one that overflows (``1e400``) stays text."""
    value = float(text)
    if value == _INF or value == -_INF:
        return BadNumber(text)
    return value


def parse_int(text: str) -> int | BadNumber:
    """A JSON integer; one no double holds exactly (``2**53 + 1``, 5,000 digits) stays text."""
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return BadNumber(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER or _exact_double(value):
        return value
    return BadNumber(text)


def _exact_double(value: int) -> bool:
    """Whether the audit log's RFC 8785 canonicaliser can write ``value`` (it needs an IEEE-754 double)."""
    try:
        canonical_number(value)
    except (CanonicalJSONError, OverflowError, ValueError):
        return False
    return True


def parse_constant(text: str) -> BadNumber:
    return BadNumber(text)  # NaN, Infinity, -Infinity: not JSON, though Python's json accepts them


DECODER = json.JSONDecoder(parse_float=parse_float, parse_int=parse_int, parse_constant=parse_constant)

# Only text holding a NaN/Infinity literal, a run of 16 digits (an integer beyond 2**53, a float too long
# to overflow otherwise) or a positive exponent of 3 digits can hold a BadNumber (a negative one
# underflows to 0, which is kept). Searched on a fold (digits to "0", "E" to "e"): substring searches at C
# speed, where a regex of these alternatives tried each at every position (~10 us for a 170-byte request,
# more than parsing it). A false alarm only costs a walk of the value.
_NUMBER_FOLD = bytes.maketrans(b"123456789E", b"000000000e")


def may_hold_bad_numbers(text: str) -> bool:
    """False when ``text`` surely parses without a ``BadNumber``; True when it may hold one."""
    if "NaN" in text or "Infinity" in text:
        return True
    folded = text.encode("utf-8", "surrogatepass").translate(_NUMBER_FOLD)
    return b"0000000000000000" in folded or b"e000" in folded or b"e+000" in folded


def bad_numbers(value: Any) -> list[tuple[str, str]]:
    """Each ``BadNumber`` in ``value`` as (path, why), in document order.

    Paths read ``amount``, ``meta.n[1]``; the value itself is ``""``. Walked
    without recursion, so nesting depth cannot raise.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    found: list[tuple[str, str]] = []
    while stack:
        path, node = stack.pop()
        if node.__class__ is BadNumber:
            found.append((path, node.why))
        elif isinstance(node, dict):
            stack.extend((f"{path}.{key}" if path else str(key), child) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(node))))
    return found


def number_text(value: Any) -> Any:
    """A copy of ``value`` with each ``BadNumber`` as its text (a string), safe to print and record."""
    if value.__class__ is BadNumber:
        return value.text
    if isinstance(value, dict):
        return {k: number_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [number_text(v) for v in value]
    return value


def loads_safe(text: str | bytes) -> Any:
    """JSON text another program wrote (an upstream model's answer), with each number that has no IEEE-754
    double (``NaN``, ``1e400``) as its text: a string can be relayed, recorded and compared, where ``nan``
    would make every comparison false and ``inf`` has no JSON form. ``ValueError`` when it is not JSON;
    ``Unreadable`` (a ``ValueError``) when it nests past ``MAX_DEPTH`` (deeper than the parser's stack raised
    ``RecursionError``, which no caller expects of a reader; and the value would break the writers after it)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        if not may_hold_bad_numbers(text):
            value = json.loads(text)  # C speed; the hooks of DECODER run in Python for every number
        else:
            value = number_text(DECODER.decode(text))
    except RecursionError:
        raise Unreadable(TOO_DEEP) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        raise Unreadable(TOO_DEEP)
    return value


MAX_DEPTH = 128
"""Deepest nesting of arrays and objects a request (or input line, or body) may have.

Real requests need fewer than ten levels; the limit (serde_json's default) keeps a
hostile text from exhausting the stack of the parser, the engine or the audit writer.
"""

TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"


class Unreadable(ValueError):
    """JSON that parses (or would) but cannot be taken as input: too deeply nested, or a key repeated."""


def decode(text: str) -> Any:
    """JSON text a client sent, read only where it has one reading: ``Unreadable`` when it nests past
    ``MAX_DEPTH`` or repeats a key (``JSONDecodeError`` passes). Numbers without an IEEE-754 double come
    back as ``BadNumber``: the caller names them (``bad_numbers``)."""
    try:
        value = DECODER.decode(text)
    except RecursionError:  # deeper than the parser's stack allows
        raise Unreadable(TOO_DEEP) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        raise Unreadable(TOO_DEEP)
    problem = duplicate_key(text, value)
    if problem is not None:
        raise Unreadable(problem)
    return value


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests arrays and objects more than ``MAX_DEPTH`` levels (no recursion)."""
    level = [value]
    depth = 0
    while level:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return False
        depth += 1
        if depth > MAX_DEPTH:
            return True
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return False


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def skip_space(text: str, pos: int) -> int:
    """``pos`` moved past JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def element_spans(text: str) -> list[tuple[int, int]]:
    """Where each element of the top-level array in ``text`` (valid JSON) starts and ends, so a reader can
    name the line of the element that is wrong."""
    spans: list[tuple[int, int]] = []
    pos = skip_space(text, 0) + 1  # past "["
    while True:
        pos = skip_space(text, pos)
        if text[pos] == "]":
            return spans
        start = pos
        _, pos = DECODER.raw_decode(text, pos)
        spans.append((start, pos))
        pos = skip_space(text, pos)
        if text[pos] == ",":
            pos += 1


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included


def surely_unique_keys(raw: bytes, value: Any) -> bool:
    """True when no object in the JSON text ``raw`` (parsed: ``value``) repeats a key; False: it may (ask
    ``repeated_key``, which names the key).

    Decided at C speed against orjson's compact form of the value, which holds
    each kept member once. Either ``raw`` is that form itself (compact
    clients), or its colons are counted: each member has one, and strings hold
    the same ones in both texts when ``raw`` escapes nothing (no backslash: no
    quote, no ``\\u003a`` in a string; orjson escapes no colon), so the counts
    agree exactly when no member was dropped. With escapes, the strings are cut
    out of both texts first.
    """
    try:
        compact = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # a BadNumber, an integer beyond 64 bits
        return False
    if compact == raw:
        return True
    if b"\\" not in raw:
        return raw.count(b":") == compact.count(b":")
    return _STRING.sub(b"", raw).count(b":") == _STRING.sub(b"", compact).count(b":")


def repeated_key(text: str | bytes) -> str | None:
    """The first key an object of ``text`` (valid JSON) repeats, or None."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return {}  # the values are not needed, only the keys

    # numbers stay text: a 5,000-digit integer is past int()'s limit, and only the keys matter here
    json.JSONDecoder(object_pairs_hook=pairs, parse_int=str, parse_float=str, parse_constant=str).decode(
        text if isinstance(text, str) else text.decode("utf-8", "surrogatepass"))
    return found[0] if found else None


def key_repeated_in(text: str | bytes, value: Any) -> str | None:
    """The first key an object of ``text`` (parsed: ``value``) repeats, or None: the C-speed check first,
    the naming parse only when it cannot rule a repeat out."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if surely_unique_keys(raw, value):
        return None
    return repeated_key(text)


def duplicate_key(text: str, value: Any) -> str | None:
    """Why ``text`` (parsed: ``value``) cannot be read as one value, when an object in it repeats a key."""
    key = key_repeated_in(text, value)
    if key is None:
        return None
    return (f"duplicate key {json.dumps(key, ensure_ascii=True)} in an object; "
            "send each key once (parsers disagree on which one counts)")
