"""``policyengine eval`` refuses numbers without a JSON/IEEE-754 form at the input, per line, naming the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from policyengine.engine import read_requests

POLICY = """
package shop
role clerk
model small
    cost 1 USD per 1M tokens
rule clerks_read
    allow role clerk to read dataset "orders/*"
rule clerks_invoke
    allow role clerk to invoke model "*"
budget daily
    for model small
    limit 1000 tokens per day
    warn at 1%
    on exceed deny
"""


def _exe() -> list[str]:
    found = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "policyengine"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*_exe(), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def _refuse(name: str):
    raise ValueError(f"not strict JSON: {name}")


def strict(stdout: str) -> list[dict]:
    """Each output line parsed by a parser that refuses NaN and Infinity."""
    return [json.loads(line, parse_constant=_refuse) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numbers")
    (root / "shop.policy").write_text(POLICY)
    return root


GOOD = '{"principal":{"id":"pat","roles":["clerk"]},"action":"read","resource":{"kind":"dataset","id":"orders/1"}}'


def with_data(raw: str) -> str:
    return GOOD[:-1] + ',"data":{"amount":' + raw + '}}'


BIG = "9" * 5000  # more digits than Python's int() converts by default
NUMBERS = [
    # case, raw number, error (None: accepted)
    ("float overflow", "1e400", "data.amount: number 1e400 is out of range (numbers must be finite IEEE-754 doubles)"),
    ("negative overflow", "-1e400",
     "data.amount: number -1e400 is out of range (numbers must be finite IEEE-754 doubles)"),
    ("NaN literal", "NaN", "data.amount: NaN is not a JSON number"),
    ("Infinity literal", "Infinity", "data.amount: Infinity is not a JSON number"),
    ("-Infinity literal", "-Infinity", "data.amount: -Infinity is not a JSON number"),
    ("integer beyond 2**53, no exact double", str(2**53 + 1),
     f"data.amount: number {2**53 + 1} is out of range (numbers must be finite IEEE-754 doubles)"),
    ("integer with 5000 digits", BIG,
     f"data.amount: number {BIG[:20]}...{BIG[-10:]} (5000 digits) is out of range "
     "(numbers must be finite IEEE-754 doubles)"),
    ("largest double", "1.7976931348623157e308", None),
    ("tiny float underflows to 0", "1e-400", None),
    ("2**53", str(2**53), None),
    ("huge integer that is a double", str(2**60), None),
    ("long decimal", "0.1234567890123456789", None),
]


@pytest.mark.parametrize("case,raw,error", NUMBERS, ids=[n[0] for n in NUMBERS])
def test_read_requests_names_the_field_of_a_number_without_a_double(case, raw, error):
    (item,) = read_requests(with_data(raw) + "\n")
    assert item.error == error
    json.dumps(item.request, allow_nan=False)  # the request kept for output/audit is strict JSON
    if error is not None:
        assert item.request["data"]["amount"] == raw


_LITERALS = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", str(2**53 + 1), "1e400", "1E+309", "-1e0400", "9" * 400]))


@given(st.lists(_LITERALS, min_size=1, max_size=4))
@example(["123456789012345678"])
@example(["1E400"])
@example(["1E+309"])
@example(["1e-400"])
def test_the_cheap_number_screen_never_misses_a_number_without_a_double(literals):
    # `_batch` walks a request for bad numbers only when `may_hold_bad_numbers` says its text may hold one.
    from policyengine.jsontext import decode
    from policyengine.jsontext import bad_numbers, may_hold_bad_numbers

    text = with_data("[" + ",".join(literals) + "]")
    if bad_numbers(decode(text)):
        assert may_hold_bad_numbers(text)


def test_every_bad_number_of_a_request_is_named_not_only_the_first():
    (item,) = read_requests(GOOD[:-1] + ',"data":{"amount":1e400,"fee":NaN},"context":{"n":[1,-1e999]}}\n')
    assert item.error == ("data.amount: number 1e400 is out of range (numbers must be finite IEEE-754 doubles); "
                          "data.fee: NaN is not a JSON number; "
                          "context.n[1]: number -1e999 is out of range (numbers must be finite IEEE-754 doubles)")


def test_bad_numbers_in_arrays_and_documents_name_the_element():
    batch = "[" + GOOD + "," + with_data("[1, NaN]") + "]"
    items = list(read_requests(batch + "\n"))
    assert [i.error for i in items] == [None, "data.amount[1]: NaN is not a JSON number"]
    document = "[\n" + GOOD + ",\n" + with_data("1e999") + "\n]\n"
    items = list(read_requests(document))
    assert [(i.line, i.error is None) for i in items] == [(2, True), (3, False)]


@pytest.mark.parametrize("audit", [False, True])
def test_eval_denies_the_line_and_decides_the_next(rules, tmp_path, audit):
    lines = "\n".join([GOOD, with_data("1e400"), with_data("NaN"), with_data(str(2**53 + 1)), GOOD]) + "\n"
    args = ["eval", "--rules", str(rules)]
    if audit:
        from policyengine.audit import generate_key

        generate_key(tmp_path / "k.key")
        args += ["--audit", str(tmp_path / "a.duckdb"), "--key", str(tmp_path / "k.key")]
    result = run(*args, stdin=lines)
    assert "Traceback" not in result.stderr, result.stderr
    got = strict(result.stdout)
    assert [d["effect"] for d in got] == ["allow", "deny", "deny", "deny", "allow"]
    assert got[1]["errors"] == ["line 2: data.amount: number 1e400 is out of range "
                                "(numbers must be finite IEEE-754 doubles)"]
    assert got[2]["errors"] == ["line 3: data.amount: NaN is not a JSON number"]
    assert result.returncode == 1
    if audit:
        verify = run("audit", "verify", "--db", str(tmp_path / "a.duckdb"), "--pubkey",
                     str(tmp_path / "k.key") + ".pub.pem")
        assert verify.returncode == 0, verify.stdout + verify.stderr


INVOKE = '{"principal":{"id":"pat","roles":["clerk"]},"action":"invoke","resource":{"kind":"model","id":"small"},'


@pytest.mark.parametrize("tokens", ["1e308", "1.7976931348623157e308", str(10**300), "1e400", "-1", "\"lots\""])
def test_decision_output_is_strict_json_for_any_estimate(rules, tokens):
    result = run("eval", "--rules", str(rules), stdin=INVOKE + '"context":{"tokens":' + tokens + "}}\n")
    assert "Traceback" not in result.stderr, result.stderr
    (decision,) = strict(result.stdout)
    assert decision["effect"] == "deny"


def test_a_bad_number_under_a_key_with_a_lone_surrogate_is_reported_escaped():
    (item,) = read_requests(GOOD[:-1] + ',"data":{"a\\ud800":NaN}}\n')
    assert item.error == "data.a\\ud800: NaN is not a JSON number"
    item.error.encode("utf-8")
    json.dumps(item.request, allow_nan=False).encode("utf-8")
