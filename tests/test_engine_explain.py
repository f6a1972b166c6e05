"""``Policy.explain``: the trace names every rule considered and why it did or did not match,
and its decision is exactly the one ``evaluate`` returns."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from policyengine import InMemoryLedger, load_policy

POLICY = """
package ex
role viewer
role admin extends viewer
agent bot
    roles viewer
model local
    region "eu-west-1" hosting internal
model remote
    region "us-east-1" hosting external
rule viewers_read
    allow role viewer to read dataset "docs/*"
rule bots_invoke
    allow agent bot to invoke model "*"
    when context.tokens <= 100
rule no_drafts
    deny any to read dataset "docs/drafts/*"
rule admins_write
    allow role admin to write dataset "docs/*"
    unless context.frozen == true
residency eu
    when data has origin and data.origin == "DE"
    require region in ["eu-west-1"]
escalate big_reads
    when action == "read" and context has rows and context.rows > 1000
    to role admin
budget bot_tokens
    for agent bot
    limit 1000 tokens per day
route pick
    when context.task == "x"
    prefer remote, local
"""

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    (root / "ex.policy").write_text(POLICY)
    ledger = InMemoryLedger()
    ledger.charge("agent:bot", "tokens", 250, NOW)
    return load_policy(root, ledger=ledger)


def viewer(rid="docs/a", action="read", **extra):
    return {"principal": {"id": "v", "roles": ["viewer"]}, "action": action,
            "resource": {"kind": "dataset", "id": rid}, **extra}


def bot(rid, **context):
    resource = {"kind": "model"} if rid is None else {"kind": "model", "id": rid}
    return {"principal": {"id": "bot", "type": "agent"}, "action": "invoke", "resource": resource,
            "context": context, "data": {"origin": "DE"}}


TRACES = [
    # case, request, lines that must appear in the trace
    ("allowed read", viewer(), [
        "request: user 'v' holding [viewer] wants to read dataset docs/a",
        "rule ex.viewers_read [allow]", "MATCHED (allow)",
        "rule ex.no_drafts [deny]", "no match: resource id 'docs/a' does not match 'docs/drafts/*'",
        "rule ex.admins_write [allow]", "no match: principal does not hold role admin",
        "rule ex.bots_invoke [allow]", "no match: principal is not agent bot",
        "residency ex.eu: does not apply: data has origin and data.origin == \"DE\" (data = {}, data.origin = <missing>)",
        "escalate ex.big_reads: does not match", "context.rows = <missing>",
        "decision: allow", "because ex.viewers_read",
    ]),
    ("denied draft", viewer("docs/drafts/1"), ["MATCHED (deny)", "decision: deny", "because ex.no_drafts"]),
    ("gate", viewer(context={"rows": 5000}), ["escalate ex.big_reads: matches", "decision: escalate",
                                              '"kind":"approval_required"']),
    ("when false shows the values", bot("local", tokens=500), [
        "no match: when is false: context.tokens <= 100 (context.tokens = 500)", "decision: deny"]),
    ("unless true", {"principal": {"id": "a", "roles": ["admin"]}, "action": "write",
                     "resource": {"kind": "dataset", "id": "docs/a"}, "context": {"frozen": True}},
     ["no match: unless is true: context.frozen == true (context.frozen = True)"]),
    ("budget usage", bot("local", tokens=50), [
        "budget ex.bot_tokens: covers this request (agent:bot, on exceed deny)",
        "tokens per day: used 250 + this request 50 of 1,000", "decision: allow"]),
    ("route candidates in order", bot(None, task="x", tokens=50), [
        "route ex.pick: matches; candidates in order: remote, local", "candidate remote:",
        "residency ex.eu: applies", "candidate local:", "decision: allow via route local"]),
    ("malformed", {"principal": {"id": "v"}}, ["request not decided by rules:", "<request>: malformed request: action: missing"]),
    ("undeclared agent", {"principal": {"id": "x", "type": "agent"}, "action": "read",
                          "resource": {"kind": "dataset", "id": "docs/a"}}, ["<agent-identity>"]),
]


@pytest.mark.parametrize("case,request_,lines", TRACES, ids=[t[0] for t in TRACES])
def test_trace(policy, case, request_, lines):
    explanation = policy.explain(request_, now=NOW)
    text = explanation.text()
    for line in lines:
        assert line in text, f"{line!r} missing from:\n{text}"
    assert explanation.decision == policy.evaluate(request_, now=NOW)
