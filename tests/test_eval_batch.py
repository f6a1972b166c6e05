"""Batched evaluation: ``Policy.evaluate_many`` and the batched JSON Lines path of ``policyengine eval``.

Both must give exactly what deciding one request at a time gives: the same
decisions, the same error lines naming the same input lines, the same exit
status. The reference is the line-by-line reader (``engine.read_requests``) and
``Policy.evaluate``; inputs mix good requests with every kind of bad line the
careful reader knows (not JSON, too deep, numbers without a double, lone
surrogates, non-objects), arrays on a line, blank lines, CRLF and a BOM, cut
into reads of every size so lines and UTF-8 characters straddle reads.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from policyengine import InMemoryLedger, jsonl, load_policy
from policyengine.engine import read_requests

POLICY = """
package shop
role clerk
role manager extends clerk
model small
    region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens
rule clerks_read
    allow role clerk to read dataset "orders/**"
    because "clerks handle orders"
rule no_archive
    deny any to read dataset "orders/archive/*"
rule managers_invoke
    allow role manager to invoke model "*"
budget daily
    for model small
    limit 1000 tokens per day
    warn at 50%
    on exceed deny
rule clerks_export
    allow role clerk to export dataset "orders/**"
escalate big_exports
    when action == "export" and data.rows > 100
    to role manager
    within 4h else deny
"""


def request(roles=("clerk",), action="read", kind="dataset", rid="orders/1", **extra) -> dict:
    return {"principal": {"id": "pat", "roles": list(roles)}, "action": action,
            "resource": {"kind": kind, "id": rid}, **extra}


GOOD = [
    json.dumps(request()),
    json.dumps(request(rid="orders/archive/7")),
    json.dumps(request(roles=())),
    json.dumps(request(roles=("manager",), action="invoke", kind="model", rid="small", context={"tokens": 600})),
    json.dumps(request(rid="orders/é/ü")),  # non-ASCII, written raw
    json.dumps(request(rid="orders/é"), ensure_ascii=True),  # the same as \\u escapes
    json.dumps([request(), request(roles=())]),  # a batch on one line
    json.dumps(request(context={"n": 9007199254740992, "x": 1.5e300, "y": -0.0})),
    json.dumps(request(action="export", data={"rows": 500})),  # escalates
    json.dumps(request(action="export", data={"rows": 500}, context={"run_id": "r1"}, approvals=[  # approved
        {"gate": "shop.big_exports", "approver": "max", "roles": ["manager"], "ts": "2026-03-10T08:00:00Z",
         "run_id": "r1"}])),
    json.dumps(request(action="export", data={"rows": 5})),
]
BAD = [
    '{"principal": ',  # not JSON
    "[" * 200 + "]" * 200,  # too deep
    json.dumps(request(context={"n": 9007199254740993})),  # no double holds it
    json.dumps(request()).replace('"pat"', '"\\ud800"'),  # lone surrogate
    '{"action": NaN}',
    '{"n": 1e400}',
    "7",
    '"just text"',
    json.dumps(request(rid="orders//x")),
    "[]",
    json.dumps(request(action="export", data={"rows": 500}, approvals=[  # not bound to the request
        {"gate": "shop.big_exports", "approver": "max", "roles": ["manager"]}])),
]
line_st = st.one_of(st.sampled_from(GOOD), st.sampled_from(BAD), st.sampled_from(["", "   "]))


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch_rules")
    (root / "shop.policy").write_text(POLICY)
    return root


NOW = datetime(2026, 3, 10, 9, tzinfo=timezone.utc)


def claimed(where: str) -> str:
    return f"claimed roles at {where}"


def one_by_one(policy, text: str, warning=claimed, records: list | None = None) -> tuple[list[str], list[str]]:
    """stdout and stderr lines of the line-by-line path (what eval printed before batching); ``records`` gets
    the (request, decision JSON) pairs its ``--audit`` recorded."""
    out, err = [], []
    warned = False
    for item in read_requests(text.removeprefix("\ufeff")):
        if not warned and isinstance(item.request, dict) and item.request.get("approvals"):
            err.append(warning(item.where))
            warned = True
        if item.error is not None:
            decision = policy.malformed([f"{item.where}: {item.error}"])
        else:
            decision = policy.evaluate(item.request, now=NOW)
        if decision.errors:
            err.append(("input " if item.error is not None else f"input {item.where}: ") + "; ".join(decision.errors))
        out.append(decision.to_json())
        if records is not None:
            records.append((item.request, decision.to_json()))
    return out, err


class Trickle(io.RawIOBase):
    """A byte stream that hands out at most ``size`` bytes a read, as a pipe may."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.at = data, size, 0

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        chunk = self.data[self.at:self.at + min(self.size, n if n > 0 else self.size)]
        self.at += len(chunk)
        return chunk


def batched(policy, data: bytes, size: int, fixed_state: bool = False,
            records: list | None = None) -> tuple[list[str], list[str], int, int]:
    """The batched path's output; with ``records``, its audit hook too, which must see each decision before
    the decision is written."""
    out, err = [], []

    def write(text: str) -> None:
        out.extend(text.split("\n"))
        assert records is None or len(records) >= len(out)  # never a decision printed before it was recorded

    record = None if records is None else (lambda request, decision: records.append((request, decision.to_json())))
    decided, malformed = jsonl.decide_json_lines(
        policy, Trickle(data, size), now=NOW, out=write, err=err.append,
        claimed=lambda where: err.append(claimed(where)), fixed_state=fixed_state, record=record)
    return out, err, decided, malformed


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(line_st, min_size=1, max_size=40), ending=st.sampled_from(["\n", "\r\n", "\r"]),
       bom=st.booleans(), size=st.sampled_from([1, 3, 7, 64, 1 << 16]), last=st.booleans(),
       fixed_state=st.booleans(), audited=st.booleans())
def test_batched_eval_equals_one_by_one(rules, lines, ending, bom, size, last, fixed_state, audited):
    text = ("\ufeff" if bom else "") + ending.join(lines) + (ending if last else "")
    policy = load_policy(rules, ledger=InMemoryLedger())
    expected_records: list = []
    expected_out, expected_err = one_by_one(policy, text.replace("\r\n", "\n").replace("\r", "\n"),
                                            records=expected_records)
    policy = load_policy(rules, ledger=InMemoryLedger())
    records = [] if audited else None
    out, err, decided, malformed = batched(policy, text.encode("utf-8", "surrogatepass"), size, fixed_state, records)
    assert (out, err) == (expected_out, expected_err)
    assert decided == len(expected_out) and malformed == len([e for e in err if not e.startswith("claimed")])
    if audited:  # every request recorded as read, with its decision, repeated lines too
        assert records == expected_records


def test_batches_of_many_lines_cross_batch_boundaries_in_order(rules):
    lines = [GOOD[i % len(GOOD)] if i % 97 else BAD[i % len(BAD)] for i in range(3 * jsonl.BATCH + 5)]
    text = "\n".join(lines) + "\n"
    policy = load_policy(rules, ledger=InMemoryLedger())
    expected = one_by_one(policy, text)
    out, err, decided, _ = batched(load_policy(rules, ledger=InMemoryLedger()), text.encode(), 1 << 16, True)
    assert (out, err) == expected
    assert decided == len(expected[0]) > 3 * jsonl.BATCH


def test_a_document_spread_over_lines_is_read_whole(rules):
    text = "\n\n" + json.dumps([request(), request(roles=())], indent=2) + "\n"
    policy = load_policy(rules)
    out, err, decided, _ = batched(policy, text.encode(), 5)
    assert (out, err) == one_by_one(policy, text)
    assert decided == 2


def test_evaluate_many_equals_evaluate_one_by_one(rules):
    requests = [json.loads(line) for line in GOOD if not line.startswith("[")]
    requests += [7, {"principal": {"id": 7}}, request(approvals="no"), request(rid="orders/../x")]
    requests *= 3  # the second and third rounds come from the engine's caches
    single, many = load_policy(rules), load_policy(rules)
    assert many.evaluate_many(requests, now=NOW) == [single.evaluate(r, now=NOW) for r in requests]
    timeless = [r for r in requests if not (isinstance(r, dict) and r.get("action") == "export")]  # no deadlines
    assert many.evaluate_many(iter(timeless)) == [single.evaluate(r) for r in timeless]
    assert many.evaluate_many([]) == []


def test_bytes_that_are_not_utf8_stop_the_run_naming_byte_and_line(rules):
    good = json.dumps(request()).encode()
    data = good + b"\n" + good + b"\n" + b'{"action": "r\xffd"}\n' + good + b"\n"
    out: list[str] = []
    with pytest.raises(jsonl.NotUtf8) as caught:
        jsonl.decide_json_lines(load_policy(rules), Trickle(data, 10), out=lambda t: out.extend(t.split("\n")),
                                err=lambda line: None)
    assert (caught.value.byte, caught.value.line) == (2 * len(good) + 2 + 13, 3)
    assert [json.loads(line)["effect"] for line in out] == ["allow", "allow"]  # the lines before it are decided


# --- the command -------------------------------------------------------------------------


def _exe() -> list[str]:
    found = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "policyengine"]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*_exe(), *args], input=stdin, capture_output=True, env=env, timeout=120)


def test_eval_prints_what_one_by_one_prints_and_fails_closed_on_bad_lines(rules, tmp_path):
    lines = [*GOOD, *BAD, ""] * 70  # > 1,000 lines: several batches
    text = "\n".join(lines) + "\n"
    source = tmp_path / "in.jsonl"
    source.write_text(text, encoding="utf-8", errors="surrogatepass")
    now = "2026-03-10T09:00:00Z"
    result = run("eval", "--rules", str(rules), "--input", str(source), "--now", now)
    expected_out, expected_err = one_by_one(load_policy(rules, ledger=InMemoryLedger()), text, lambda where: (
        f"warning: input {where}: approvals are judged by the roles the request claims for its approvers; "
        "pass --directory FILE to judge them by a user directory"))
    assert result.returncode == 1  # some lines were malformed: denied, named, exit 1
    assert result.stdout.decode().splitlines() == expected_out
    assert result.stderr.decode().splitlines() == expected_err
    assert f"input line {len(GOOD) + 1}: not valid JSON" in result.stderr.decode()  # the bad line, named


def test_eval_audit_prints_and_records_what_one_by_one_decides(rules, tmp_path):
    import duckdb

    from policyengine.audit import generate_key

    text = "\n".join([*GOOD, *BAD, ""] * 70) + "\n"
    generate_key(tmp_path / "k.key")
    db = tmp_path / "audit.duckdb"
    result = run("eval", "--rules", str(rules), "--audit", str(db), "--key", str(tmp_path / "k.key"),
                 "--now", "2026-03-10T09:00:00Z", "--clock-override", stdin=text.encode("utf-8", "surrogatepass"))
    expected_out, _ = one_by_one(load_policy(rules, ledger=InMemoryLedger()), text)
    assert result.returncode == 1, result.stderr  # some lines were malformed: denied, named, exit 1
    assert result.stdout.decode().splitlines() == expected_out
    with duckdb.connect(str(db), read_only=True) as con:
        recorded = [json.loads(p)["decision"] for (p,) in con.execute(
            "SELECT payload FROM audit_log WHERE event = 'decision' ORDER BY seq").fetchall()]
    assert recorded == [json.loads(line) for line in expected_out]  # one record per request, in input order


def test_eval_names_the_byte_and_line_of_input_that_is_not_utf8(rules):
    good = json.dumps(request()).encode()
    result = run("eval", "--rules", str(rules), stdin=good + b"\n" + b'{"action": "\xff"}\n')
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1].endswith(
        f"input is not UTF-8 text (invalid start byte at byte {len(good) + 1 + 12}, line 2)")
    assert json.loads(result.stdout.decode().splitlines()[0])["effect"] == "allow"
    assert "Traceback" not in result.stderr.decode()


# --- repeated lines answered from memory ---------------------------------------------------

PLAIN = """
package plain
role clerk
rule clerks_read
    allow role clerk to read dataset "orders/**"
"""
AGE = PLAIN + """rule fresh_only
    deny any to read dataset "orders/**"
    when age of data.created > 30 days
"""
DEADLINE = PLAIN + """escalate reads
    when action == "read"
    to role clerk
    within 1h else deny
"""
BUDGET = PLAIN + """model small
    region "eu-west-1" hosting internal
budget daily
    for model small
    limit 1000 tokens per day
    on exceed deny
"""


@pytest.mark.parametrize("text, now, fixed_state, blocked, safe", [
    (PLAIN, None, False, frozenset(), True),
    (PLAIN, NOW, False, frozenset(), True),
    (PLAIN, None, False, None, False),  # a live block list
    (AGE, None, False, frozenset(), False),  # `age of` reads the clock
    (AGE, NOW, False, frozenset(), True),
    (DEADLINE, None, False, frozenset(), False),  # a deadline to the second
    (DEADLINE, NOW, False, frozenset(), True),
    (BUDGET, NOW, False, frozenset(), False),  # the ledger may be charged meanwhile
    (BUDGET, NOW, True, frozenset(), True),
    (BUDGET, None, True, frozenset(), False),  # windows move with the clock
])
def test_repeats_are_remembered_only_while_their_answer_cannot_change(tmp_path, text, now, fixed_state, blocked,
                                                                      safe):
    from policyengine.engine import BlockList

    (tmp_path / "p.policy").write_text(text)
    policy = load_policy(tmp_path, blocked=BlockList() if blocked is None else blocked)
    assert jsonl._Repeats(policy, now, fixed_state).safe() is safe
    line = json.dumps(request(data={"created": "2026-01-01T00:00:00Z"}))
    evaluated = []
    evaluate_many = policy.evaluate_many
    policy.evaluate_many = lambda requests, **kw: evaluated.extend(requests) or evaluate_many(requests, **kw)
    out: list[str] = []
    decided, _ = jsonl.decide_json_lines(policy, Trickle(((line + "\n") * 5).encode(), len(line) + 1), now=now,
                                         out=lambda t: out.extend(t.split("\n")), err=lambda e: None,
                                         fixed_state=fixed_state)
    assert decided == 5 and len(out) == 5
    assert len(evaluated) == (2 if safe else 5)  # the first line is read on its own, the second's answer kept


def test_a_deadline_read_from_the_clock_is_never_answered_from_memory(tmp_path, monkeypatch):
    import policyengine.evaluate as evaluate_module

    (tmp_path / "p.policy").write_text(DEADLINE)
    policy = load_policy(tmp_path)
    ticks = iter(range(1_800_000_000, 1_800_001_000))
    monkeypatch.setattr(evaluate_module.time, "time", lambda: float(next(ticks)))
    line = json.dumps(request())
    out: list[str] = []
    jsonl.decide_json_lines(policy, Trickle(((line + "\n") * 4).encode(), len(line) + 1),
                            out=lambda t: out.extend(t.split("\n")), err=lambda e: None)
    deadlines = [json.loads(text)["obligations"][0]["deadline_at"] for text in out]
    assert len(set(deadlines)) == 4  # each decision made at its own second


def _model_dump_text(decision) -> str:
    """What ``Decision.to_json`` printed before its fast path: ``model_dump`` through ``json.dumps``."""
    return json.dumps(decision.model_dump(mode="json"), separators=(",", ":"), sort_keys=False)


def test_decision_dict_and_json_are_model_dump_and_its_text(rules):
    from policyengine.decision import ApprovalRequired, BudgetWarning, Reason, make_decision

    policy = load_policy(rules, ledger=InMemoryLedger())
    decisions = [policy.evaluate(item.request, now=NOW) if item.error is None else policy.malformed([item.error])
                 for item in read_requests("\n".join([*GOOD, *BAD]))]
    odd = Reason(rule="p.r", file="dir/a.policy", line=7, message='quote " back\\\\ é \ud800 \u2028 \x00',
                 cites=("ISO 27001", "é"), candidate="small")
    obligations = (BudgetWarning(budget="b", used=1e16, limit=3, unit="USD", window="month", percent=99.99),
                   ApprovalRequired(gate="g", role="r", deadline_seconds=60, deadline_at="2026-01-01T00:00:00+00:00"))
    decisions += [make_decision("escalate", (odd, odd), obligations, "small", "h" * 64, ()),
                  make_decision("deny", (odd,), (), None, "", ("é", "\ud800"))]
    assert {d.effect for d in decisions} == {"allow", "deny", "escalate"}
    for decision in decisions:
        assert decision.to_dict() == decision.model_dump(mode="json")
        assert list(decision.to_dict()) == list(decision.model_dump(mode="json"))  # the same key order
        assert decision.to_json() == _model_dump_text(decision)
