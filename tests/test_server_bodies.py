"""A body is read one way only: one JSON document, as sent. Bodies that another reader could take for another
request (an array around the request, a separator JSON does not know, a broken array whose lines parse, a
compressed or non-UTF-8 body) are refused and never answered as allow; each refusal that decides is recorded."""

from __future__ import annotations

import gzip
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ALLOW, AUTHZEN_ALLOW, DENY, RULES, Server, audit_records

ALLOWED = json.dumps(ALLOW)
DENIED = json.dumps(DENY)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("bodies"), "--rules", str(RULES), "--no-access-log") as running:
        yield running


def _effect(answer: dict) -> str | bool | None:
    decision = answer.get("decision")
    if isinstance(decision, dict):
        return decision["effect"]
    return answer.get("effect", decision)


@pytest.mark.parametrize(("path", "body", "problem"), [
    ("/v1/decide", f"[{ALLOWED}]", "body: must be a JSON object, not list"),
    ("/v1/explain", f"[{ALLOWED}]", "body: must be a JSON object, not list"),
    ("/access/v1/evaluation", f"[{json.dumps(AUTHZEN_ALLOW)}]", "body: must be a JSON object, not list"),
    ("/v1/decide", ALLOWED + "\u2028", "not valid JSON: Extra data"),  # str.splitlines() splits there
    ("/v1/decide", ALLOWED + "\u0085", "not valid JSON: Extra data"),
    ("/v1/decide", ALLOWED + "\x0b", "not valid JSON: Extra data"),
    ("/v1/decide", ALLOWED + "\x1c", "not valid JSON: Extra data"),
])
def test_a_body_that_is_not_one_json_object_is_a_recorded_deny(server: Server, path: str, body: str,
                                                              problem: str) -> None:
    answer = server.client.post(path, content=body.encode())
    assert answer.status_code == 400, answer.text
    data = answer.json()
    assert _effect(data) in ("deny", False) and any(problem in p for p in data["problems"]), data
    seq = data.get("audit_seq") or data["context"]["audit_seq"]
    assert isinstance(seq, int)


def test_a_reserve_body_wrapped_in_an_array_holds_nothing(server: Server) -> None:
    answer = server.client.post("/v1/reserve", content=json.dumps([{"request": ALLOW}]).encode())
    assert answer.status_code == 400 and "reservation" not in answer.json(), answer.text


@pytest.mark.parametrize("body", [
    f"[{ALLOWED},\n{ALLOWED}\n",  # the closing bracket lost: its second line parses alone
    f"[{ALLOWED}, {DENIED},\n{ALLOWED}\n",  # ... and would be answered at the place of the deny
    f"[\n{ALLOWED},\n{{\"principal\": 1\n{ALLOWED}\n]",
    f"[{ALLOWED}]\n[{ALLOWED}]",
    f"[]\n{ALLOWED}\n{ALLOWED}",
    f"[{ALLOWED}]\u2028",
])
def test_a_batch_that_is_not_one_json_array_is_refused_whole(server: Server, body: str) -> None:
    answer = server.client.post("/v1/decide/batch", content=body.encode())
    assert answer.status_code == 400, answer.text
    assert "decisions" not in answer.json() and answer.json()["problems"][0].startswith("body: not valid JSON")


def test_each_bad_item_of_a_batch_is_denied_in_place_and_the_others_answered(server: Server) -> None:
    body = (f'[{ALLOWED}, {{"principal": {{"id": "alice", "roles": "analyst"}}, "action": "read",'
            f' "resource": {{"kind": "dataset", "id": "erp/invoices/1"}}}}, 7, {ALLOWED},'
            f' {{"principal": {{"id": "alice", "roles": ["analyst"]}}, "action": "read",'
            f' "resource": {{"kind": "dataset", "id": "erp/invoices/1"}}, "context": {{"x": NaN}}}}, {DENIED}]')
    answer = server.client.post("/v1/decide/batch", content=body.encode())
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert [d["effect"] for d in data["decisions"]] == ["allow", "deny", "deny", "allow", "deny", "deny"]
    assert "[2]: must be a JSON object, not int" in data["decisions"][2]["errors"]
    assert "[4]: context.x: NaN is not a JSON number" in data["decisions"][4]["errors"]
    assert len(set(data["audit_seqs"])) == 6


@pytest.mark.parametrize(("headers", "content", "problem"), [
    ({"content-encoding": "gzip"}, gzip.compress(ALLOWED.encode()), "Content-Encoding 'gzip'"),
    ({"content-encoding": "gzip"}, ALLOWED.encode(), "Content-Encoding 'gzip'"),  # a proxy would inflate it
    ({"content-type": "application/json; charset=latin-1"}, ALLOWED.encode(), "charset 'latin-1'"),
    ({"content-type": "application/json; charset=utf-16"}, ALLOWED.encode("utf-16"), "charset 'utf-16'"),
])
def test_a_body_in_an_encoding_the_server_does_not_read_gets_415_and_no_decision(
        server: Server, headers: dict[str, str], content: bytes, problem: str) -> None:
    for path in ("/v1/decide", "/v1/decide/batch", "/access/v1/evaluation", "/v1/charge"):
        answer = server.client.post(path, content=content, headers=headers)
        assert answer.status_code == 415, answer.text
        assert problem in answer.json()["problems"][0] and "decision" not in answer.json()


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"},  # curl -d sends a form type
                                     {"content-type": "application/json; charset=UTF-8"},
                                     {"content-type": 'application/json;charset="utf8"'},
                                     {"content-encoding": "identity"}, {}])
def test_a_utf8_json_body_is_decided_whatever_else_its_headers_say(server: Server, headers: dict[str, str]) -> None:
    answer = server.client.post("/v1/decide", content=("\ufeff" + ALLOWED).encode(), headers=headers)
    assert answer.status_code == 200 and answer.json()["effect"] == "allow", answer.text


def test_every_deciding_route_answers_only_what_is_durable_in_the_log(tmp_path: Path) -> None:
    """SIGKILL right after the answers (no clean stop, no final checkpoint): every answer is in DuckDB."""
    (tmp_path / "race.policy").write_text(
        "package race\nrole caller\nmodel small\n    provider \"local\" region \"eu-west-1\" hosting internal\n"
        "rule callers_invoke\n    allow role caller to invoke model \"*\"\n"
        "budget shared\n    for role caller\n    limit 10_000 tokens per month\n    on exceed deny\n")
    call = {"principal": {"id": "bob", "roles": ["caller"]}, "action": "invoke",
            "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 400}}
    running = Server(tmp_path, "--rules", str(tmp_path / "race.policy"), "--rules", str(RULES), "--no-access-log")
    answered: dict[int, str] = {}
    try:
        for body in (ALLOW, DENY, [ALLOW]):  # the last one: a malformed deny, recorded too
            answer = running.post("/v1/decide", body)
            answered[int(answer.headers["x-audit-seq"])] = answer.json().get("effect") or "deny"
        batch = running.post("/v1/decide/batch", [ALLOW, DENY, 1]).json()
        answered.update({seq: d["effect"] for seq, d in zip(batch["audit_seqs"], batch["decisions"], strict=True)})
        explained = running.post("/v1/explain", ALLOW).json()
        answered[explained["audit_seq"]] = explained["decision"]["effect"]
        reserved = running.post("/v1/reserve", {"request": call}).json()
        answered[reserved["audit_seq"]] = reserved["decision"]["effect"]
        single = running.post("/access/v1/evaluation", AUTHZEN_ALLOW).json()["context"]
        answered[single["audit_seq"]] = single["effect"]
        several = running.post("/access/v1/evaluations", {**AUTHZEN_ALLOW, "evaluations": [
            {}, {"action": {"name": "delete"}}, {"subject": 1}]}).json()["evaluations"]
        answered.update({e["context"]["audit_seq"]: e["context"]["effect"] for e in several})
    finally:
        running.stop(signal.SIGKILL)
    records = audit_records(running.db)
    assert sorted(set(answered.values())) == ["allow", "deny"] and len(answered) == 12
    for seq, effect in answered.items():
        event, payload = records[seq]
        assert event == "decision" and payload["decision"]["effect"] == effect, seq
