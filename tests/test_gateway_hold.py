"""``--hold-for-approval``: a call an escalation gate holds waits for an approver instead of getting 403.

A gateway subprocess; the caller is the official ``openai`` SDK (in a thread, as its call waits), the
approver a plain HTTP client on ``/v1/approvals`` with its own virtual key.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from gateway_process import Process, received, start_gateway, start_upstream
from server_process import audit_records

POLICY = """\
package gw.hold

role caller
role reviewer extends caller

model small
    provider "openai-compatible" region "eu-west-1" hosting external
model gated
    provider "openai-compatible" region "eu-west-1" hosting external
model selfgated
    provider "openai-compatible" region "eu-west-1" hosting external
model hasty
    provider "openai-compatible" region "eu-west-1" hosting external

rule callers_invoke
    allow role caller to invoke model "*"

escalate gated_calls
    when resource.id == "gated"
    to role reviewer
    within 1h else deny

escalate four_eyes
    when resource.id == "selfgated"
    to role reviewer
    require distinct approver

escalate hasty_calls
    when resource.id == "hasty"
    to role reviewer
    within 1 s else deny
"""
KEYS = {
    "sk-bob": {"id": "bob", "roles": ["caller"]},
    "sk-rita": {"id": "rita", "roles": ["reviewer"]},
    "sk-ron": {"id": "ron", "roles": ["reviewer"]},
    "sk-rex": {"id": "Rex", "roles": ["reviewer"]},  # an id the engine reads canonically as "rex"
    "sk-bot": {"id": "bot", "type": "agent", "roles": ["reviewer"]},  # an agent key claiming a person's role
}


@dataclass
class Env:
    cwd: Path
    gateway: Process
    record: Path

    def call_in_background(self, key: str, model: str) -> dict[str, Any]:
        """Start a chat call in a thread; the dict gets ``answer`` or ``error`` when it ends."""
        out: dict[str, Any] = {}

        def run() -> None:
            client = openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0, timeout=120)
            try:
                out["answer"] = client.chat.completions.create(model=model, messages=[{"role": "user",
                                                                                         "content": "hi"}])
            except openai.APIError as error:
                out["error"] = error

        out["thread"] = threading.Thread(target=run)
        out["thread"].start()
        return out

    def approvals(self, key: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.gateway.url + "/v1/approvals", headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        return answer.json()["data"]

    def held(self, key: str, model: str) -> dict[str, Any]:
        """Wait until a call to ``model`` is listed as held (the caller's thread has reached the gateway)."""
        for _ in range(600):
            found = [a for a in self.approvals(key) if a["model"] == model]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no held call to {model}")

    def decide(self, key: str, held_id: str, decision: str) -> httpx.Response:
        return httpx.post(self.gateway.url + "/v1/approvals", headers={"authorization": f"Bearer {key}"},
                          json={"id": held_id, "decision": decision})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with _gateway(tmp_path_factory.mktemp("gateway-hold")) as started:
        yield started


@contextmanager
def _gateway(cwd: Path) -> Iterator[Env]:
    record = cwd / "upstream.jsonl"
    with start_upstream(cwd, record) as upstream:
        (cwd / "gw.policy").write_text(POLICY, encoding="utf-8")
        _keys_file(cwd, KEYS)
        base = upstream.url + "/v1"
        providers = {"models": {m: {"base_url": base, "model": f"{m}-up"} for m in ("small", "gated", "selfgated",
                                                                                  "hasty")}}
        (cwd / "providers.yaml").write_text(yaml.safe_dump(providers), encoding="utf-8")
        config = {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "db": "gw.duckdb",
                  "key": "gw.key"}
        (cwd / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        with start_gateway(cwd, cwd / "gateway.yaml", "--hold-for-approval", "120") as gateway:
            yield Env(cwd, gateway, record)


def _keys_file(cwd: Path, keys: dict[str, dict[str, Any]]) -> None:
    entries = [{"sha256": hashlib.sha256(k.encode()).hexdigest(), "principal": p} for k, p in keys.items()]
    (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")


def test_a_held_call_is_served_once_a_reviewer_approves_it(env: Env) -> None:
    call = env.call_in_background("sk-bob", "gated")
    held = env.held("sk-rita", "gated")
    assert held["gate"] == "gw.hold.gated_calls" and held["requester"] == "bob" and held["role"] == "reviewer"
    assert env.approvals("sk-bob") == []  # a caller without the role sees nothing to approve
    assert env.decide("sk-bob", held["id"], "approve").status_code == 403  # and may not approve
    assert not any(r["body"]["model"] == "gated-up" for r in received(env.record))  # nothing went upstream yet
    answer = env.decide("sk-rita", held["id"], "approve")
    assert answer.status_code == 200 and answer.json()["outcome"] == "approved"
    call["thread"].join(60)
    assert "error" not in call, call.get("error")
    assert call["answer"].model == "gated"
    assert received(env.record)[-1]["body"]["model"] == "gated-up"
    assert env.decide("sk-rita", held["id"], "approve").status_code == 404  # decided: no longer held


def test_a_rejected_call_gets_403_approval_rejected(env: Env) -> None:
    call = env.call_in_background("sk-bob", "gated")
    held = env.held("sk-ron", "gated")
    assert env.decide("sk-ron", held["id"], "reject").status_code == 200
    call["thread"].join(60)
    error = call["error"]
    assert isinstance(error, openai.PermissionDeniedError) and error.body["code"] == "approval_rejected"


def test_the_requester_cannot_approve_a_four_eyes_gate_but_another_reviewer_can(env: Env) -> None:
    call = env.call_in_background("sk-rita", "selfgated")
    held = env.held("sk-rita", "selfgated")
    own = env.decide("sk-rita", held["id"], "approve")
    assert own.status_code == 403 and own.json()["error"]["code"] == "approval_not_accepted"
    assert env.decide("sk-ron", held["id"], "approve").status_code == 200
    call["thread"].join(60)
    assert "error" not in call, call.get("error")
    assert call["answer"].model == "selfgated"


def test_the_wait_ends_at_the_gates_deadline_with_403(env: Env) -> None:
    call = env.call_in_background("sk-bob", "hasty")  # within 1 s: the hold ends long before 120 s
    call["thread"].join(60)
    error = call["error"]
    assert isinstance(error, openai.PermissionDeniedError) and error.body["code"] == "approval_required"
    assert "not approved within 1 s" in error.body["message"]
    assert not any(r["body"]["model"] == "hasty-up" for r in received(env.record))


def test_an_agent_key_approves_nothing_whatever_roles_it_claims(env: Env) -> None:
    """An escalation gate asks a person: the policy does not give an agent the roles its key claims."""
    call = env.call_in_background("sk-bob", "gated")
    held = env.held("sk-rita", "gated")
    assert env.approvals("sk-bot") == []
    refused = env.decide("sk-bot", held["id"], "approve")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "policy_denied"
    assert env.decide("sk-rex", held["id"], "approve").status_code == 200  # "Rex" approves as rex, canonically
    call["thread"].join(60)
    assert "error" not in call, call.get("error")


def test_a_held_call_the_reloaded_rules_deny_is_not_approved_and_a_removed_key_stops_working(tmp_path: Path) -> None:
    """A held call keeps waiting under the rules in force when it is approved; keys.yaml is read again on
    SIGHUP, so a key removed there is refused without a restart."""
    with _gateway(tmp_path) as env:
        call = env.call_in_background("sk-bob", "gated")
        held = env.held("sk-rita", "gated")
        policy = tmp_path / "gw.policy"
        policy.write_text(policy.read_text() + '\nrule incident_ban\n    deny any to invoke model "gated"\n')
        _keys_file(tmp_path, {k: v for k, v in KEYS.items() if k != "sk-ron"})
        env.gateway.proc.send_signal(signal.SIGHUP)
        env.gateway.wait_for_line("keys reloaded")
        refused = env.decide("sk-rita", held["id"], "approve")
        assert refused.status_code == 403 and refused.json()["error"]["rule"] == "gw.hold.incident_ban", refused.text
        assert env.decide("sk-ron", held["id"], "reject").status_code == 401  # removed from keys.yaml
        assert env.decide("sk-rita", held["id"], "reject").status_code == 200
        call["thread"].join(60)
        assert isinstance(call["error"], openai.PermissionDeniedError)
        assert not any(r["body"]["model"] == "gated-up" for r in received(env.record))


def test_every_approval_decision_is_audited_with_its_approver(env: Env) -> None:
    """Its own approvals, found by held id: it does not depend on the tests run before it."""
    decided = []
    for requester, model, approver, decision in [("sk-bob", "gated", "sk-rita", "approve"),
                                                 ("sk-bob", "gated", "sk-ron", "reject"),
                                                 ("sk-rita", "selfgated", "sk-ron", "approve")]:
        call = env.call_in_background(requester, model)
        held = env.held(approver, model)
        assert env.decide(approver, held["id"], decision).status_code == 200
        call["thread"].join(60)
        decided.append(held["id"])
    env.gateway.stop()
    approvals = {p["held_id"]: (p["approver"], p["outcome"])
                 for event, p in audit_records(env.cwd / "gw.duckdb").values() if event == "approval"}
    assert [approvals.get(held_id) for held_id in decided] == [("rita", "approved"), ("ron", "rejected"),
                                                                ("ron", "approved")]
