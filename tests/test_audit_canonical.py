"""RFC 8785 canonical JSON: the bytes every leaf hash covers."""

from __future__ import annotations

import enum
import json
import math
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine.audit.canonical import (
    CanonicalJSONError,
    _write,
    canonical_bytes,
    canonical_number,
    canonical_text,
    is_canonical,
)

# RFC 8785 appendix B and ECMAScript Number.prototype.toString.
NUMBERS = [
    (0.0, "0"),
    (-0.0, "0"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (9007199254740992.0, "9007199254740992"),
    (-9007199254740992.0, "-9007199254740992"),
    (295147905179352830000.0, "295147905179352830000"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (9.999999999999997e22, "9.999999999999997e+22"),
    (1e23, "1e+23"),
    (1e-7, "1e-7"),
    (0.000001, "0.000001"),
    (0.0001, "0.0001"),
    (333333333.3333333, "333333333.3333333"),
    (123.0, "123"),
    (-1.5, "-1.5"),
    (4.35, "4.35"),
    (0.002, "0.002"),
    (-2.5e-10, "-2.5e-10"),
    (1.5e16, "15000000000000000"),
    (1, "1"),
    (-(2**53), "-9007199254740992"),
    (2**53 + 2, "9007199254740994"),
    (2**70, "1.1805916207174113e+21"),
]


@pytest.mark.parametrize(("value", "text"), NUMBERS)
def test_numbers_print_as_ecmascript(value: float, text: str) -> None:
    assert canonical_number(value) == text


@pytest.mark.parametrize(("value", "text"), NUMBERS)
def test_numbers_inside_objects_and_arrays_print_as_ecmascript(value: float, text: str) -> None:
    """Objects and arrays take orjson's text when it is exact: each number that orjson prints otherwise
    (1e-6 as "1e-6", 123.0 as "123.0", 1.5e16 as "1.5e+16", -0.0) must be caught and printed by RFC 8785."""
    assert canonical_text({"n": value, "l": [value, "0e+1 1.0,"]}) == f'{{"l":[{text},"0e+1 1.0,"],"n":{text}}}'
    assert canonical_text([value]) == f"[{text}]"
    assert is_canonical(f'{{"n":{text}}}')


class _Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [{"n": [math.nan]}, {"n": {"m": -math.inf}}, {"u": uuid.UUID(int=1)}, {"e": _Colour.RED},
     {"f": orjson.Fragment(b'{"x":1}')}, [1, (2, math.nan)]],
)
def test_values_orjson_prints_but_json_has_not_are_refused(value: object) -> None:
    """orjson prints NaN as null, UUIDs and enums as their values and a Fragment as given: the fast path must not."""
    with pytest.raises(CanonicalJSONError):
        canonical_text(value)


@pytest.mark.parametrize(
    "text",
    ['{"n":1.0}', '{"n":1e-6}', '{"n":1.5e+16}', '{"n":-0}', '{"n":9007199254740993}', '{"b":1,"a":2}', '{"a": 1}',
     '{"\ufb33":1,"\U0001f600":2}',  # code point order; RFC 8785 sorts by UTF-16 units: U+1F600 first
     '{"s":"\u000b"}',  # a raw control character: not JSON
     '{"s":"\\u000B"}', '{"s":"\\u0041"}', '{"s":"\\/"}'],  # escapes RFC 8785 writes otherwise
)
def test_non_canonical_texts_are_told_apart(text: str) -> None:
    assert not is_canonical(text)


def test_canonical_texts_with_escapes_and_utf16_order_are_canonical() -> None:
    assert is_canonical('{"\U0001f600":2,"\ufb33":1}')
    assert is_canonical('{"s":"\\u000b\\u001f\\n"}')


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**53 + 1, -(2**60) - 1, 10**400])
def test_numbers_without_exact_json_form_are_refused(value: float) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_text({"n": value})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": 1, "a": [True, False, None]}, '{"a":[true,false,null],"b":1}'),
        ({"\u20ac": 1, "\r": 2, "1": 3, "\U0001f600": 4, "\u0080": 5, "\ufb33": 6},
         '{"\\r":2,"1":3,"\u0080":5,"\u20ac":1,"\U0001f600":4,"\ufb33":6}'),  # RFC 8785 3.2.3: UTF-16 order
        ({"s": "\u0000\b\t\n\f\r\"\\/\u001f\u007f\u00e9\u2028"},
         '{"s":"\\u0000\\b\\t\\n\\f\\r\\"\\\\/\\u001f\u007f\u00e9\u2028"}'),
        ({"nested": {"z": [1.5, {"y": 1e-9}], "a": {}}}, '{"nested":{"a":{},"z":[1.5,{"y":1e-9}]}}'),
        ([], "[]"),
    ],
)
def test_objects_strings_and_key_order(value: object, text: str) -> None:
    assert canonical_text(value) == text


@pytest.mark.parametrize("value", [{1: "a"}, {"d": object()}, {"t": {1, 2}}])
def test_non_json_values_are_refused_with_a_path(value: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_text(value)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_bytes({"s": "\ud800"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.integers().filter(lambda i: abs(i) < 2**1000 and int(float(i)) == i)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_path_equals_exact_writer_and_round_trips(value: object) -> None:
    text = canonical_text(value)
    exact: list[str] = []
    _write(value, exact, "")
    assert text == "".join(exact)
    assert canonical_text(json.loads(text)) == text  # canonical form is a fixed point
