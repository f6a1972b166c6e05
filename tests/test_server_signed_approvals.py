"""``serve --directory``: an approval in a request counts only when its approver signed it (docs/server.md).

The directory says which roles an approver holds, not that they approved: any
caller could write ``"approver": "alice"`` into his own request. A real server
subprocess on 127.0.0.1 with the shipped rules; each row is an approval entry
someone sends and what every deciding route must make of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_process import RULES, Server, audit_records

from policyengine.approval_binding import request_hash
from policyengine.approval_signature import signed
from policyengine.audit import generate_key

GATE = "finance.invoices.large_payment"  # role senior_analyst, require distinct approver


def payment(amount: int = 20000, run_id: str = "r-1") -> dict[str, Any]:
    """Bob (an analyst) asks to pay; the gate needs a senior analyst's approval."""
    return {"principal": {"id": "bob", "roles": ["analyst"]}, "action": "approve_payment",
            "resource": {"kind": "tool", "id": "erp/payments"},
            "data": {"vendor_status": "active", "vendor_age_days": 400},
            "context": {"currency": "EUR", "amount": amount, "run_id": run_id}}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@pytest.fixture(scope="module")
def approvers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the approvers' own private keys (alice.key, ...)."""
    return tmp_path_factory.mktemp("approvers")


@pytest.fixture(scope="module")
def keys(approvers: Path) -> dict[str, Any]:
    return {who: generate_key(approvers / f"{who}.key") for who in ("alice", "bob", "carol")}


def serving(work: Path, keys: dict[str, Any]) -> Server:
    """Alice (senior analyst) and bob (analyst) have public keys in the directory; carol (senior analyst) has none."""

    def pem(who: str) -> str:
        return "|\n" + "".join(f"      {line}\n" for line in keys[who].public.pem.splitlines())

    (work / "directory.yaml").write_text(
        "users:\n"
        f"  alice:\n    roles: [senior_analyst]\n    public_key: {pem('alice')}"
        f"  bob:\n    roles: [analyst]\n    public_key: {pem('bob')}"
        "  carol:\n    roles: [senior_analyst]\n")
    return Server(work, "--rules", str(RULES), "--directory", "directory.yaml")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve"), keys) as running:
        yield running


def bound_to_run(**extra: Any) -> dict[str, Any]:
    return {"gate": GATE, "approver": "alice", "run_id": "r-1", "ts": now(), **extra}


def bound_to_request(request: dict[str, Any]) -> dict[str, Any]:
    return {"gate": GATE, "approver": "alice", "request_hash": request_hash(request), "ts": now()}


# (case, the request sent: made from the approvers' keys, its effect, the errors it is denied with)
Row = tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str, list[str]]
ROWS: list[Row] = [
    ("no approval: the gate escalates", lambda k: payment(), "escalate", []),
    ("forged: bob names alice, unsigned", lambda k: {**payment(), "approvals": [bound_to_run()]}, "deny",
     ["approvals[0]: not signed; an approval sent to the server counts only when signed by its approver "
      "(`policyengine keys sign-approval`)"]),
    ("signed by bob's key, naming alice", lambda k: {**payment(), "approvals": [signed(bound_to_run(), k["bob"])]},
     "deny", ["approvals[0]: signature does not verify with alice's key in the directory"]),
    ("signed by alice, then its run changed", lambda k: {**payment(run_id="r-2"), "approvals": [
        {**signed(bound_to_run(), k["alice"]), "run_id": "r-2"}]},
     "deny", ["approvals[0]: signature does not verify with alice's key in the directory"]),
    ("signed by alice for the run", lambda k: {**payment(), "approvals": [signed(bound_to_run(), k["alice"])]},
     "allow", []),
    ("signed by alice for this very request", lambda k: {**payment(), "approvals": [
        signed(bound_to_request(payment()), k["alice"])]}, "allow", []),
    ("alice's signed approval copied into another request", lambda k: {**payment(amount=900000), "approvals": [
        signed(bound_to_request(payment()), k["alice"])]},
     "deny", ["approvals[0]: request_hash does not match this request (it approves another one)"]),
    ("carol has no key in the directory", lambda k: {**payment(), "approvals": [
        signed({**bound_to_run(), "approver": "carol"}, k["carol"])]},
     "deny", ["approvals[0]: carol has no public key in the directory, so no approval of theirs can be checked"]),
    ("mallory is not in the directory", lambda k: {**payment(), "approvals": [
        signed({**bound_to_run(), "approver": "mallory"}, k["carol"])]},
     "deny", ["approvals[0]: mallory is not in the user directory"]),
    ("a signature that is not one", lambda k: {**payment(), "approvals": [{**bound_to_run(), "signature": "AAAA"}]},
     "deny", ["approvals[0].signature: not the base64 of an Ed25519 signature (64 bytes)"]),
    ("one good and one forged entry", lambda k: {**payment(), "approvals": [
        signed(bound_to_run(), k["alice"]), bound_to_run()]},
     "deny", ["approvals[1]: not signed; an approval sent to the server counts only when signed by its approver "
              "(`policyengine keys sign-approval`)"]),
]


def native(server: Server, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and the decision of one request sent to a native route."""
    if path == "/v1/decide/batch":
        answer = server.post(path, [request])
        return answer.status_code, answer.json()["decisions"][0]
    body = {"request": request} if path == "/v1/reserve" else request
    answer = server.post(path, body)
    data = answer.json()
    return answer.status_code, data.get("decision", data)


def authzen(server: Server, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and the decision (effect, errors) of the same request sent as AuthZEN."""
    evaluation = {"subject": {"type": "user", "id": "bob", "properties": {"roles": ["analyst"]}},
                  "action": {"name": "approve_payment"}, "resource": {"type": "tool", "id": "erp/payments"},
                  "context": {**request["context"], "data": request["data"],
                              **({"approvals": request["approvals"]} if "approvals" in request else {})}}
    if path == "/access/v1/evaluations":
        answer = server.post(path, {"evaluations": [evaluation]})
        context = answer.json()["evaluations"][0]["context"]
    else:
        answer = server.post(path, evaluation)
        context = answer.json()["context"]
    return answer.status_code, {"effect": context["effect"], "errors": context.get("errors", [])}


ROUTES = [("/v1/decide", native), ("/v1/explain", native), ("/v1/reserve", native), ("/v1/decide/batch", native),
          ("/access/v1/evaluation", authzen), ("/access/v1/evaluations", authzen)]


@pytest.mark.parametrize(("path", "send"), ROUTES, ids=[r[0] for r in ROUTES])
@pytest.mark.parametrize(("case", "make", "effect", "errors"), ROWS, ids=[r[0] for r in ROWS])
def test_an_approval_counts_only_signed_by_its_approver(server: Server, keys: dict[str, Any], path: str,
                                                       send: Any, case: str, make: Any, effect: str,
                                                       errors: list[str]) -> None:
    request = make(keys)
    if send is authzen and "request_hash" in str(request.get("approvals")):
        pytest.skip("request_hash is of the native request; AuthZEN callers bind to the run")
    status, decision = send(server, path, request)
    assert (decision["effect"], decision["errors"]) == (effect, errors)
    batch = path in ("/v1/decide/batch", "/access/v1/evaluations")  # one answer for many: 200, each decision says
    assert status == (400 if errors and not batch else 200)


def test_a_refused_approval_is_recorded_with_why(tmp_path: Path, keys: dict[str, Any]) -> None:
    with serving(tmp_path, keys) as running:
        answer = running.post("/v1/decide", {**payment(), "approvals": [bound_to_run()]})
    seq = int(answer.headers["x-audit-seq"])
    event, payload = audit_records(running.db)[seq]
    assert event == "decision" and payload["decision"]["effect"] == "deny"
    assert payload["decision"]["errors"][0].startswith("approvals[0]: not signed")
    assert payload["request"]["approvals"][0]["approver"] == "alice"


# (case, how the approval is bound on the command line)
SIGNED_BY_CLI = [("--run-id", ["--run-id", "r-1"]), ("--request", ["--request", "payment.json"])]


@pytest.mark.parametrize(("case", "binding"), SIGNED_BY_CLI, ids=[c[0] for c in SIGNED_BY_CLI])
def test_keys_sign_approval_prints_an_entry_the_server_counts(server: Server, keys: dict[str, Any], approvers: Path,
                                                             tmp_path: Path, case: str, binding: list[str]) -> None:
    (tmp_path / "payment.json").write_text(json.dumps(payment()))
    made = subprocess.run([sys.executable, "-m", "policyengine", "keys", "sign-approval", "--key",
                           str(approvers / "alice.key"), "--as", "Alice", "--gate", GATE, *binding],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    entry = json.loads(made.stdout)
    assert entry["approver"] == "alice" and set(entry) >= {"gate", "ts", "signature"}
    answer = server.post("/v1/decide", {**payment(), "approvals": [entry]})
    assert (answer.status_code, answer.json()["effect"]) == (200, "allow"), answer.text
    other = server.post("/v1/decide", {**payment(amount=30000, run_id="r-9"), "approvals": [entry]})
    assert other.status_code == 400 and other.json()["decision"]["effect"] == "deny", other.text
