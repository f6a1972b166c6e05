"""Fail closed on spelling: no re-spelling of one attribute turns a shipped deny or escalation into an allow.

For every deny and escalate case of the policy tests in ``rules/``, one value of
the request (an attribute under data, context, principal or resource attrs, a
role, the resource id) is re-spelt: its JSON type changed, its case changed,
padded, put in another Unicode form or in look-alike letters, or (for ids) spelt
with ``.``/``..``/empty segments; a positive number has its sign flipped (every
number the shipped rules compare with a threshold is bounded by its schema: a
payment of -250,000 is not under the 10,000 gate). The decision must still be
deny or escalate, never allow.
Removing an attribute is not a re-spelling: whether absence matters is the
policy's choice (``required`` in a schema, or a condition without ``has``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from policyengine import InMemoryLedger, load_policy
from policyengine.testing.cases import load_test_file
from policyengine.testing.discovery import discover

RULES = Path(__file__).resolve().parent.parent / "rules"
POLICY = load_policy(RULES, ledger=InMemoryLedger())


def _cases() -> list[tuple[str, dict, Any]]:
    out = []
    for path in discover([RULES]):
        for case in load_test_file(path).cases:
            if case.expect.effect == "allow" or case.usage:
                continue
            decision = POLICY.evaluate(case.request, now=case.now)
            if decision.effect == "allow":
                continue  # decided with help the test runner gives (e.g. a directory): not this test's subject
            if any(r.rule == "<request>" for r in decision.reasons):
                continue  # denied for a spelling already: re-spelling it back is the allowed request
            out.append((f"{Path(path).name}::{case.name}", case.request, case.now))
    return out


CASES = _cases()

FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"}
# Latin small capitals (phonetic letters NFKC keeps): "ꜱᴀɴᴄᴛɪᴏɴᴇᴅ" reads as "SANCTIONED"
SMALL_CAPITALS = dict(zip("abcdefghijklmnoprstuvwyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ"))
# Cyrillic letters that look like Latin ones: "АСМЕ" (all Cyrillic, one script) reads as "ACME"
CYRILLIC = dict(zip("aeopcyxijsABEKMHOPCTX", "аеорсухіјѕАВЕКМНОРСТХ"))


def _small_capitals(value: str, first_only: bool) -> str:
    """``value`` with its first letter that has a small capital (or every such letter) written as one."""
    if first_only:
        i = next((i for i, c in enumerate(value) if c.lower() in SMALL_CAPITALS), None)
        return value if i is None else value[:i] + SMALL_CAPITALS[value[i].lower()] + value[i + 1:]
    return "".join(SMALL_CAPITALS.get(c.lower(), c) for c in value)


def _leaves(request: dict) -> list[tuple[tuple, Any]]:
    """(path, value) of every re-spellable value: attribute leaves, roles, the resource id."""
    found: list[tuple[tuple, Any]] = []

    def walk(prefix: tuple, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk((*prefix, k), v)
        elif isinstance(value, list) and prefix[-1] != "roles":
            found.append((prefix, value))
            for i, v in enumerate(value):
                walk((*prefix, i), v)
        else:
            found.append((prefix, value))

    for root in ("data", "context"):
        walk((root,), request.get(root, {}))
    walk(("principal", "attrs"), request["principal"].get("attrs", {}))
    walk(("resource", "attrs"), request["resource"].get("attrs", {}))
    for i, role in enumerate(request["principal"].get("roles", [])):
        found.append((("principal", "roles", i), role))
    if "id" in request["resource"]:
        found.append((("resource", "id"), request["resource"]["id"]))
    return [(p, v) for p, v in found if v is not None and v != {} and p[-1] != "attrs"]


def _spellings(value: Any, is_id: bool) -> list[Any]:
    """Every re-spelling of ``value`` this test tries."""
    out: list[Any] = []
    if isinstance(value, bool):
        out += [str(value).lower(), str(value), int(value), [value], {"value": value}]
    elif isinstance(value, (int, float)):
        out += [str(value), f" {value} ", [value], {"value": value}, bool(value), *([-value] if value > 0 else [])]
    elif isinstance(value, str):
        out += [value.upper(), value.lower(), value.title(), value.swapcase(), f" {value}", f"{value} ",
                f"\t{value}\n", "".join(FULL_WIDTH.get(c, c) for c in value),
                unicodedata.normalize("NFKD", value), unicodedata.normalize("NFD", value), [value], {"value": value},
                _small_capitals(value, first_only=True), _small_capitals(value, first_only=False),
                "".join(CYRILLIC.get(c, c) for c in value)]
        if value.replace(".", "", 1).isdigit():
            out.append(float(value) if "." in value else int(value))
        if is_id:
            head, _, tail = value.rpartition("/")
            out += [f"./{value}", f"{value}/", f"/{value}", value.replace("/", "//"), f"{value}/.",
                    f"{head}/x/../{tail}" if head else f"x/../{value}", f"{value}\x00", f"{value}\u2028"]
    elif isinstance(value, list):
        out += [json.dumps(value), value[0] if value else "", {"value": value}]
    return [s for s in out if s != value or type(s) is not type(value)]


def _respell(request: dict, path: tuple, value: Any) -> dict:
    out = json.loads(json.dumps(request))
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return out


@st.composite
def respelt(draw: Any) -> tuple[str, dict, Any, tuple, Any]:
    name, request, now = draw(st.sampled_from(CASES))
    path, value = draw(st.sampled_from(_leaves(request)))
    spelling = draw(st.sampled_from(_spellings(value, path == ("resource", "id")) or [value]))
    return name, _respell(request, path, spelling), now, path, spelling


def test_there_are_deny_and_escalate_cases_to_respell():
    assert len(CASES) >= 60


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(respelt())
def test_respelling_one_attribute_never_turns_a_deny_or_escalation_into_allow(example):
    name, request, now, path, spelling = example
    decision = POLICY.evaluate(request, now=now)
    assert decision.effect != "allow", f"{name}: {'.'.join(map(str, path))} = {spelling!r} is allowed"


# --- the issue's spellings end to end, through the CLI ---------------------------------------------

BOT = {"id": "invoice_classifier", "type": "agent"}
PAY = {"principal": BOT, "action": "approve_payment", "resource": {"kind": "tool", "id": "erp/payments"}}
SPELLINGS = [
    ({**PAY, "data": {"vendor_status": "SANCTIONED", "vendor_age_days": 400},
      "context": {"amount": 900, "currency": "EUR"}}, "deny"),
    ({**PAY, "data": {"vendor_status": "sanctioned ", "vendor_age_days": 400},
      "context": {"amount": 900, "currency": "EUR"}}, "deny"),
    ({**PAY, "data": {"vendor_status": ["sanctioned"], "vendor_age_days": 400},
      "context": {"amount": 900, "currency": "EUR"}}, "deny"),
    ({**PAY, "data": {"vendor_status": "active", "vendor_age_days": 400},
      "context": {"amount": "999999999", "currency": "EUR"}}, "deny"),
    ({**PAY, "data": {"vendor_status": "active"}, "context": {"amount": 900, "currency": "EUR"}}, "deny"),
    ({**PAY, "data": {"vendor_status": "active", "vendor_age_days": 400},
      "context": {"amount": -250_000, "currency": "EUR"}}, "deny"),
    ({"principal": BOT, "action": "invoke", "resource": {"kind": "model", "id": "frontier_llm"},
      "data": {"classification": "Restricted"}, "context": {"tokens": 100}}, "deny"),
    ({"principal": BOT, "action": "invoke", "resource": {"kind": "model", "id": "FRONTIER_LLM"},
      "data": {"classification": "restricted"}, "context": {"tokens": 100}}, "deny"),
    ({"principal": BOT, "action": "read", "resource": {"kind": "dataset", "id": "erp/invoices/../payroll/x"}}, "deny"),
]


def test_the_issue_spellings_are_denied_by_policyengine_eval(tmp_path):
    lines = "".join(json.dumps(r) + "\n" for r, _ in SPELLINGS)
    (tmp_path / "requests.jsonl").write_text(lines)
    out = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", str(RULES),
                          "--input", str(tmp_path / "requests.jsonl")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    decisions = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [d["effect"] for d in decisions] == [effect for _, effect in SPELLINGS], out.stderr


INVOICE = {"vendor": "Acme Metals", "vendor_country": "DE", "vendor_region": "EU", "amount": 900.0, "currency": "EUR",
           "po_number": "PO-41000", "classification": "confidential", "true_exception": "none",
           "vendor_age_days": 900}
SURE = "models:\n  classifier_small: {accuracy: 1.0, confidence: 0.95}\n"


@pytest.mark.slow
def test_the_issue_spellings_are_never_paid_by_policyengine_run_invoices(tmp_path):
    statuses = ["active", "SANCTIONED", "Sanctioned", "sanctioned ", ["sanctioned"], "ｓａｎｃｔｉｏｎｅｄ"]
    items = [{**INVOICE, "id": f"INV-S{i}", "vendor_status": s} for i, s in enumerate(statuses)]
    (tmp_path / "invoices.json").write_text(json.dumps(items))
    (tmp_path / "sure.yaml").write_text(SURE)
    run = [sys.executable, "-m", "policyengine", "run", "invoice-exceptions", "--providers", "sure.yaml", "--json"]
    out = subprocess.run([*run, "--input", "invoices.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    runs = {r["item_id"]: r for r in json.loads(out.stdout)["runs"]}
    assert runs["INV-S0"]["status"] == "completed"  # the control: an active vendor is paid
    for i in range(1, len(statuses)):
        assert runs[f"INV-S{i}"]["status"] == "denied", runs[f"INV-S{i}"]
    (tmp_path / "amount.json").write_text(json.dumps([{**INVOICE, "id": "INV-A", "vendor_status": "active",
                                                       "amount": "999999999"}]))
    refused = subprocess.run([*run, "--input", "amount.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and '"999999999" is not a number' in refused.stderr
