"""RFC 8785 JSON Canonicalization Scheme (JCS), the byte form every hash covers.

A verifier written in any language must reproduce the exact bytes a record was
hashed over, so the audit trail never hashes ``json.dumps`` output (whose float
and key order rules are Python's own). JCS fixes both: object keys sorted by
UTF-16 code units, no whitespace, strings escaped as ECMAScript's
``JSON.stringify`` does, and numbers printed as ECMAScript prints IEEE-754
doubles. Integers that no double holds exactly (2**53 + 1) are refused rather
than rounded: an audit trail must not change numbers it was asked to keep.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53
# Characters above which code point order and UTF-16 order (key sorting) differ, plus surrogates.
_HIGH = re.compile("[\ud800-\U0010ffff]")

# One encoder, built once: json.dumps(**options) would build a new one per record.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # JCS == ensure_ascii=False escaping


class CanonicalJSONError(ValueError):
    """A value that has no RFC 8785 form (NaN, huge integer, non-string key, ...)."""


def canonical_number(value: float) -> str:
    """Print a number the way ECMAScript's Number.prototype.toString does."""
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return str(value)
        try:
            as_double = float(value)
        except OverflowError:
            as_double = math.inf
        if not math.isinf(as_double):
            text = canonical_number(as_double)
            # Exactly a double, or the very digits a double prints as (so parsed output round-trips).
            if int(as_double) == value or text == str(value):
                return text
        raise CanonicalJSONError(f"integer {value} is not an IEEE-754 double; store it as a string")
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < MAX_SAFE_INTEGER:
        return str(int(value))
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    stripped = all_digits.lstrip("0")
    point -= len(all_digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        head = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _sorted_keys(obj: dict[str, Any]) -> list[str]:
    keys = sorted(obj)
    if not all(k.isascii() for k in keys):
        keys.sort(key=lambda k: k.encode("utf-16-be"))
    return keys


def _write(value: Any, out: list[str], path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, (int, float)):
        try:
            out.append(canonical_number(value))
        except CanonicalJSONError as err:
            raise CanonicalJSONError(f"{err} (at {path or '/'})") from None
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in _sorted_keys(value) if all(isinstance(k, str) for k in value) else _bad_keys(value, path):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key))
            out.append(":")
            _write(value[key], out, f"{path}/{key}")
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, f"{path}/{i}")
        out.append("]")
    else:
        raise CanonicalJSONError(f"{type(value).__name__} value at {path or '/'} is not JSON")


def _bad_keys(value: dict[Any, Any], path: str) -> list[str]:
    bad = next(k for k in value if not isinstance(k, str))
    raise CanonicalJSONError(f"object key {bad!r} at {path or '/'} is not a string")


def _plain(value: Any) -> bool:
    """True when ``json.dumps`` already prints ``value`` exactly as JCS does.

    That holds for str keys, safe integers, and floats that Python and
    ECMAScript both print in plain decimal (non-integral, 1e-4 <= |x| < 1e16).
    Written as flat loops because it runs on every appended record.
    """
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return _plain_scalar(value)
    for item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict or kind is list:
            if not _plain(item):
                return False
        elif not _plain_scalar(item):
            return False
    return True


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    return False


# Where orjson's compact, key-sorted output can differ from RFC 8785, checked on that output
# (bytes, C-speed scans; a string that looks alike only costs the exact writer, never a wrong byte):
# a number with an exponent ("1e-7", "1e+21"), an integral float ("1.0", "-0.0"), an integer of
# 16+ digits (beyond 2**53 RFC 8785 prints doubles), and characters from U+D000 up (where UTF-16
# and code point key order differ; UTF-8 lead bytes 0xED-0xF4). One fold (digits to 0, "-" to "+")
# serves the exponent and digit-run checks, so each is one substring search (every scan of a
# record's ~500 bytes costs ~0.3 us here: fewer scans is what makes this check cheap).
_FOLD = bytes.maketrans(b"123456789-", b"000000000+")
_INTEGRAL_FLOAT = re.compile(rb"\.0(?![0-9])")
_HIGH_UTF8 = re.compile(rb"[\xed-\xf4]")


def _orjson_inexact(raw: bytes) -> bool:
    folded = raw.translate(_FOLD)
    return (b"0e+" in folded or b"0000000000000000" in folded
            or _INTEGRAL_FLOAT.search(raw) is not None
            or (not raw.isascii() and _HIGH_UTF8.search(raw) is not None))


_ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _orjson_text(value: Any) -> str | None:
    """orjson's text of a dict or list when it is exactly RFC 8785's, else None (the exact writer decides).

    orjson writes NaN as null and accepts UUIDs and enums: parsing the output
    back must give a value equal to the input, or the fast path is not taken.
    """
    try:
        raw = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    if _orjson_inexact(raw):
        return None
    try:
        if orjson.loads(raw) != value:
            return None
    except orjson.JSONDecodeError:
        return None
    return raw.decode("utf-8")


def is_canonical(text: str) -> bool:
    """True when ``text`` is the RFC 8785 form of the JSON object or array it holds (the verifier's check)."""
    if text[:1] in ("{", "["):
        try:
            raw = text.encode("utf-8")
            if not _orjson_inexact(raw) and orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS) == raw:
                return True
        except (orjson.JSONDecodeError, orjson.JSONEncodeError, UnicodeEncodeError):
            pass  # e.g. a lone surrogate escape or a huge integer: the exact path says what it is
    try:
        return canonical_text(json.loads(text)) == text
    except (ValueError, TypeError, CanonicalJSONError, RecursionError):
        return False


def canonical_text(value: Any) -> str:
    """Return the RFC 8785 text of ``value`` (dicts, lists, str, int, float, bool, None).

    Objects and arrays take orjson (C speed) when its output is provably the
    canonical one (``_orjson_text``); then ``json.dumps`` after a cheap check
    that its output is already canonical; anything else takes the exact writer.
    """
    kind = type(value)
    if kind is dict or kind is list:
        text = _orjson_text(value)
        if text is not None:
            return text
    if _plain(value):
        text = _ENCODER.encode(value)
        if text.isascii() or not _HIGH.search(text):
            return text
    out: list[str] = []
    _write(value, out, "")
    return "".join(out)


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 UTF-8 bytes of ``value``; lone surrogates are refused."""
    try:
        return canonical_text(value).encode("utf-8")
    except UnicodeEncodeError as err:
        raise CanonicalJSONError(f"string contains a lone surrogate: {err.reason}") from None
