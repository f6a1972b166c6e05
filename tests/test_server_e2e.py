"""``policyengine serve`` end to end: a real server subprocess on 127.0.0.1, real HTTP clients, the shipped rules."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ALLOW, AUTHZEN_ALLOW, AUTHZEN_DENY, DENY, RULES, Server, audit_records, verify


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("serve"), "--rules", str(RULES)) as running:
        yield running


@pytest.mark.parametrize(("body", "decision", "effect", "rule"), [
    (AUTHZEN_ALLOW, True, "allow", "finance.invoices.analysts_read_invoices"),
    (AUTHZEN_DENY, False, "deny", "<default-deny>"),
    ({**AUTHZEN_ALLOW, "subject": {"type": "agent", "id": "shadow_agent"}}, False, "deny", None),
])
def test_authzen_evaluation_allows_and_denies_by_the_shipped_rules(
        server: Server, body: dict[str, Any], decision: bool, effect: str, rule: str | None) -> None:
    answer = server.post("/access/v1/evaluation", body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["decision"] is decision
    assert data["context"]["effect"] == effect
    assert isinstance(data["context"]["audit_seq"], int) and data["context"]["audit_seq"] > 1
    if rule is not None:
        assert data["context"]["reasons"][0]["rule"] == rule


def test_authzen_echoes_the_request_id(server: Server) -> None:
    answer = server.post("/access/v1/evaluation", AUTHZEN_ALLOW, headers={"X-Request-ID": "abc-123"})
    assert answer.headers["x-request-id"] == "abc-123"


def test_native_decide_answers_the_full_decision_with_its_audit_seq(server: Server) -> None:
    allowed = server.post("/v1/decide", ALLOW)
    denied = server.post("/v1/decide", DENY)
    assert (allowed.status_code, denied.status_code) == (200, 200)
    assert allowed.json()["effect"] == "allow" and denied.json()["effect"] == "deny"
    assert set(allowed.json()) == {"effect", "reasons", "obligations", "route", "policy_hash", "errors"}
    assert int(denied.headers["x-audit-seq"]) > int(allowed.headers["x-audit-seq"])


def test_batch_decides_every_request_in_order(server: Server) -> None:
    answer = server.post("/v1/decide/batch", [ALLOW, DENY, {"principal": 1}, ALLOW])
    assert answer.status_code == 200
    data = answer.json()
    assert [d["effect"] for d in data["decisions"]] == ["allow", "deny", "deny", "allow"]
    assert data["decisions"][2]["errors"]  # the malformed one is denied naming its problems
    seqs = data["audit_seqs"]
    assert seqs == list(range(seqs[0], seqs[0] + 4))


@pytest.mark.parametrize(("semantic", "effects"), [
    ("execute_all", [True, False, True]),
    ("deny_on_first_deny", [True, False]),
    ("permit_on_first_permit", [True]),
])
def test_authzen_evaluations_fill_defaults_and_follow_the_semantic(server: Server, semantic: str,
                                                                   effects: list[bool]) -> None:
    body = {"subject": AUTHZEN_ALLOW["subject"], "resource": AUTHZEN_ALLOW["resource"],
            "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "delete"}}, {"action": {"name": "read"}}],
            "options": {"evaluations_semantic": semantic}}
    answer = server.post("/access/v1/evaluations", body)
    assert answer.status_code == 200, answer.text
    assert [e["decision"] for e in answer.json()["evaluations"]] == effects


def _raw(server: Server, path: str, content: bytes) -> httpx.Response:
    return server.client.post(path, content=content, headers={"content-type": "application/json"})


BAD_BODIES = [
    ("/v1/decide", b"", ["body: empty"]),
    ("/v1/decide", b"{not json", ["not valid JSON"]),
    ("/v1/decide", b"\xff\xfe", ["not UTF-8"]),
    ("/v1/decide", b"[1, 2]", ["body: must be a JSON object, not list"]),
    ("/v1/decide", b"{}\n{}", ["holds 2 JSON values"]),
    ("/v1/decide", b'"text"', ["must be a JSON object"]),
    ("/v1/decide", json.dumps({"principal": {"id": 5}, "action": "", "resource": {"kind": "planet"}}).encode(),
     ["principal.id", "action", "resource.kind"]),
    ("/v1/decide", b'{"principal": {"id": "a"}, "action": "read", "resource": {"kind": "model"},'
                   b' "context": {"tokens": 1e400}}', ["context.tokens"]),
    ("/v1/decide/batch", b'{"a": 1}', ["must be a JSON array"]),
    ("/v1/decide", b'{"principal": {"id": "a"}, "action": "delete", "action": "read", "resource": {"kind": "dataset",'
                   b' "id": "x"}}', ['duplicate key "action"']),
    ("/v1/decide", b'{"principal": {"id": "a"}, "action": "READ", "resource": {"kind": "dataset", "id": "x"}}',
     ["action: 'READ' differs only in case"]),
    ("/access/v1/evaluation", b'{"subject": {"type": "user", "id": "a", "id": "b"}, "action": {"name": "read"},'
                              b' "resource": {"type": "dataset", "id": "x"}}', ['duplicate key "id"']),
    ("/v1/explain", b"[]", ["body: must be a JSON object, not list"]),
    ("/access/v1/evaluation", b"{}", ["subject: required", "action: required", "resource: required"]),
    ("/access/v1/evaluation", json.dumps({"subject": {"type": "robot", "id": ""}, "action": {"name": 3},
                                          "resource": {"type": "dataset"}}).encode(),
     ["subject.type", "subject.id", "action.name", "resource.id"]),
    ("/access/v1/evaluation", json.dumps({  # data beside the action would reach no rule about the request's data
        "subject": {"type": "user", "id": "a"}, "action": {"name": "read", "properties": {
            "data": {"classification": "restricted"}, "approvals": []}},
        "resource": {"type": "dataset", "id": "x"}}).encode(),
     ["action.properties.data: send it as context.data", "action.properties.approvals: send it as context."]),
    ("/access/v1/evaluation", json.dumps({  # a PEP paying action.properties.amount past a gate read at 5
        "subject": {"type": "user", "id": "a"}, "action": {"name": "pay", "properties": {"amount": 50_000}},
        "resource": {"type": "tool", "id": "erp/payments"}, "context": {"amount": 5}}).encode(),
     ["action.properties.amount: also in context with another value"]),
    ("/access/v1/evaluations", json.dumps({"evaluations": 3, "options": {"evaluations_semantic": "most"}}).encode(),
     ["evaluations: must be an array", "evaluations_semantic"]),
    ("/v1/charge", json.dumps({"tokens": -1, "cost": "x", "extra": 1}).encode(),
     ["request: required", "tokens", "cost", "unknown fields: extra"]),
]


@pytest.mark.parametrize(("path", "content", "named"), BAD_BODIES)
def test_bad_bodies_get_400_naming_every_problem_and_never_allow(server: Server, path: str, content: bytes,
                                                                 named: list[str]) -> None:
    answer = _raw(server, path, content)
    assert answer.status_code == 400, answer.text
    data = answer.json()
    problems = " | ".join(data["problems"])
    for part in named:
        assert part in problems
    assert data.get("decision") in (None, False) or data["decision"]["effect"] == "deny"
    assert "allow" not in json.dumps(data.get("context", {}).get("effect", ""))


def test_wrong_routes_methods_and_oversize_bodies(server: Server) -> None:
    assert server.client.get("/v1/nothing").status_code == 404
    wrong = server.client.get("/v1/decide")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    big = _raw(server, "/v1/decide", b" " * (2 << 20))
    assert big.status_code == 413


def test_every_item_of_a_bad_batch_is_still_denied_and_audited(server: Server) -> None:
    answer = server.post("/access/v1/evaluations", {"evaluations": [AUTHZEN_ALLOW, {"subject": 1}]})
    data = answer.json()["evaluations"]
    assert [e["decision"] for e in data] == [True, False]
    assert any("subject" in error for error in data[1]["context"]["errors"])


def test_health_ready_policy_openapi_and_authzen_metadata(server: Server) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    ready = server.client.get("/ready").json()
    policy = server.client.get("/v1/policy").json()
    assert ready["status"] == "ready" and ready["policy_hash"] == policy["policy_hash"]
    assert policy["source"] == "rules" and policy["rules"] > 0
    assert any(f.endswith("design_sample.policy") for f in policy["files"])
    document = server.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert {"/v1/decide", "/v1/decide/batch", "/v1/explain", "/v1/charge", "/v1/reserve", "/v1/release",
            "/access/v1/evaluation",
            "/access/v1/evaluations", "/health", "/ready", "/v1/policy", "/metrics"} <= set(document["paths"])
    assert "#/$defs/" not in json.dumps(document)
    metadata = server.client.get("/.well-known/authzen-configuration").json()
    assert metadata["policy_decision_point"] == server.url
    assert metadata["access_evaluation_endpoint"] == f"{server.url}/access/v1/evaluation"


def test_explain_answers_the_decision_and_its_trace(server: Server) -> None:
    answer = server.post("/v1/explain", DENY)
    data = answer.json()
    assert answer.status_code == 200 and data["decision"]["effect"] == "deny"
    assert data["trace"] and isinstance(data["audit_seq"], int)


def _payment(approver: str, claimed: list[str]) -> dict[str, Any]:
    """A 20,000 EUR payment (gate finance.invoices.large_payment, role senior_analyst) carrying an approval."""
    return {"principal": {"id": "carol", "roles": ["analyst"]}, "action": "approve_payment",
            "resource": {"kind": "tool", "id": "erp/payments"},
            "data": {"vendor_status": "active", "vendor_age_days": 400},
            "context": {"currency": "EUR", "amount": 20000, "run_id": "r-1"},
            "approvals": [{"gate": "finance.invoices.large_payment", "approver": approver, "roles": claimed,
                           "run_id": "r-1", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}


def test_without_a_directory_an_approval_is_refused_not_trusted(server: Server) -> None:
    """Any caller can write an approval claiming the gate's role: with no directory to judge it, it opens nothing."""
    claimed = _payment("bob", ["senior_analyst"])
    for path in ("/v1/decide", "/v1/explain"):
        answer = server.post(path, claimed)
        data = answer.json()
        decision = data["decision"]
        assert answer.status_code == 400 and decision["effect"] == "deny", answer.text
        assert decision["errors"] == ["approvals: this server has no user directory to judge approvers by, and "
                                      "does not trust the roles an approval claims; start it with --directory FILE"]
    authzen = server.post("/access/v1/evaluation", {
        "subject": {"type": "user", "id": "carol", "properties": {"roles": ["analyst"]}},
        "action": {"name": "approve_payment"}, "resource": {"type": "tool", "id": "erp/payments"},
        "context": {**claimed["context"], "data": claimed["data"], "approvals": claimed["approvals"]}})
    assert authzen.json()["decision"] is False, authzen.text


def test_with_a_directory_an_unsigned_approval_is_refused_not_trusted(tmp_path: Path) -> None:
    """The directory says alice is a senior analyst, not that she approved: unsigned, it opens nothing
    (signed approvals: tests/test_server_signed_approvals.py)."""
    directory = Path(__file__).resolve().parents[1] / "data" / "directory.yaml"
    with Server(tmp_path, "--rules", str(RULES), "--directory", str(directory)) as running:
        answer = running.post("/v1/decide", _payment("alice", []))  # alice is a senior analyst
    assert answer.status_code == 400 and answer.json()["decision"]["effect"] == "deny", answer.text
    assert answer.json()["problems"][0].startswith("approvals[0]: not signed")


def test_charged_usage_counts_against_the_budgets_of_later_decisions(server: Server) -> None:
    call = {"principal": {"type": "agent", "id": "invoice_classifier"}, "action": "invoke",
            "resource": {"kind": "model", "id": "classifier_small"},
            "context": {"tokens": 1000, "workflow": "invoice-exceptions"}}
    before = server.post("/v1/decide", call).json()
    assert before["effect"] == "allow" and not before["obligations"]
    charged = server.post("/v1/charge", {"request": call, "tokens": 1_700_000, "cost": 0.5})
    assert charged.status_code == 200, charged.text
    assert "workflow:invoice-exceptions" in charged.json()["charged"]
    after = server.post("/v1/decide", call).json()
    assert after["obligations"] and {o["kind"] for o in after["obligations"]} == {"budget_warning"}
    metrics = server.client.get("/metrics").text
    assert 'policyengine_budget_spend_total{scope="workflow:invoice-exceptions",unit="tokens"} 1.7e+06' in metrics


def test_a_charge_in_a_currency_no_covering_budget_counts_is_refused(server: Server) -> None:
    call = {"principal": {"type": "agent", "id": "invoice_classifier"}, "action": "invoke",
            "resource": {"kind": "model", "id": "classifier_small"},
            "context": {"tokens": 10, "workflow": "invoice-exceptions"}}  # its budget limits USD a day
    for currency in ("usd", " USD", "\uff35SD", "EUR"):
        refused = server.post("/v1/charge", {"request": call, "cost": 499, "currency": currency})
        assert refused.status_code == 400 and refused.json()["problems"] == [
            f"currency: {currency!r} is not the currency of the budgets covering this request (USD); "
            "the cost would count against none of them"], refused.text
    spelled = server.post("/v1/charge", {"request": {**call, "context": {**call["context"],
                                                                         "workflow": "Invoice-Exceptions"}},
                                         "tokens": 10})
    assert spelled.status_code == 400 and "differs only in case" in spelled.json()["problems"][0], spelled.text
    assert server.post("/v1/charge", {"request": call, "tokens": 10}).status_code == 200  # tokens only: any currency


def _counter(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_counters_move_with_decisions(server: Server) -> None:
    before = server.client.get("/metrics").text
    server.post("/v1/decide", ALLOW)
    server.post("/v1/decide", DENY)
    after = server.client.get("/metrics").text
    rule = "finance.invoices.analysts_read_invoices"
    assert _counter(after, "policyengine_decisions_total", effect="allow", rule=rule) == \
        _counter(before, "policyengine_decisions_total", effect="allow", rule=rule) + 1
    assert _counter(after, "policyengine_decisions_total", effect="deny", rule="<default-deny>") == \
        _counter(before, "policyengine_decisions_total", effect="deny", rule="<default-deny>") + 1
    assert _counter(after, "policyengine_audit_commit_seconds_count") > 0
    assert _counter(after, "policyengine_policy_reloads_total", outcome="activated") == 1
    assert "policyengine_audit_queue_depth" in after


def test_access_log_is_one_json_line_per_request(server: Server) -> None:
    server.post("/v1/decide", ALLOW, headers={"X-Request-ID": "log-me"})
    line = server.wait_for_line('"request_id":"log-me"')
    entry = json.loads(line)
    assert entry["path"] == "/v1/decide" and entry["status"] == 200 and entry["effect"] == "allow"
    assert isinstance(entry["audit_seq"], int) and entry["ms"] >= 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_gets_an_authzen_decision(server: Server) -> None:
    done = subprocess.run(["curl", "-sS", "-X", "POST", f"{server.url}/access/v1/evaluation",
                           "-H", "content-type: application/json", "-d", json.dumps(AUTHZEN_ALLOW)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout)["decision"] is True


def test_every_answered_decision_is_in_the_verified_log_after_a_clean_stop(tmp_path: Path) -> None:
    with Server(tmp_path, "--rules", str(RULES)) as running:
        answered = {}
        for body in (ALLOW, DENY, ALLOW):
            answer = running.post("/v1/decide", body)
            answered[int(answer.headers["x-audit-seq"])] = answer.json()
    assert running.proc.returncode == 0
    checked = verify(tmp_path, running.db, running.key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    records = audit_records(running.db)
    assert records[1][0] == "policy_activated"
    for seq, decision in answered.items():
        event, payload = records[seq]
        assert event == "decision" and payload["decision"] == decision


@pytest.mark.slow
def test_sigkill_mid_load_leaves_a_clean_log_holding_every_answered_decision(tmp_path: Path) -> None:
    running = Server(tmp_path, "--rules", str(RULES), "--no-access-log")
    answered: dict[int, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            for i in range(5_000):  # bounded; the kill ends it much sooner
                if stop.is_set():
                    return
                try:
                    answer = client.post("/v1/decide", json=ALLOW if (i + worker) % 2 else DENY)
                except httpx.HTTPError:
                    return  # the server is gone
                if answer.status_code == 200:
                    with lock:
                        answered[int(answer.headers["x-audit-seq"])] = answer.json()["effect"]

    threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(answered) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    running.stop(signal.SIGKILL)  # mid-load: requests are in flight
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(answered) >= 400
    checked = verify(tmp_path, running.db, running.key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    records = audit_records(running.db)
    missing = [seq for seq in answered if seq not in records]
    assert not missing
    assert all(records[seq][1]["decision"]["effect"] == effect for seq, effect in answered.items())
