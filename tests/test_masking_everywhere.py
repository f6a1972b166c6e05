"""Personal data never reaches the audit log unmasked, whatever wrote the record.

Real DuckDB files and Ed25519 keys; the CLI runs as subprocesses. Each row is a
way PII used to slip through (see docs/audit.md, "Masking").
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime

import duckdb
import httpx
import pytest
import yaml
from gateway_process import start_gateway, start_upstream
from server_process import Server, audit_records

from policyengine.audit import AuditError, AuditLog, generate_key, load_masking, load_private_key
from policyengine.audit.masking import Masking, parse_pointer
from policyengine.reporting.monitor import unblock
from policyengine.resources import data_path
from policyengine.store.blocklist import add_block, ensure_blocks_table

EMAIL = "sue.secret@example.com"


def stored(db, event: str | None = None) -> str:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT event, payload FROM audit_log ORDER BY seq").fetchall()
    return "\n".join(p for e, p in rows if event is None or e == event)


REQUEST_SHAPES = {
    # the principal's email written where the engine reads it as an attribute
    "beside id": {"id": "sue", "email": EMAIL},
    "under attrs": {"id": "sue", "attrs": {"email": EMAIL}},
    "both (attrs wins)": {"id": "sue", "email": EMAIL, "attrs": {"email": EMAIL, "team": "ap"}},
}


@pytest.mark.parametrize("shape", REQUEST_SHAPES)
def test_the_shipped_mask_finds_attributes_in_the_canonical_request_shape(tmp_path, shape):
    masking = load_masking(data_path("data") / "mask.yaml")
    key = tmp_path / "k.key"
    generate_key(key)
    request = {"principal": REQUEST_SHAPES[shape], "action": "read", "resource": {"kind": "dataset", "id": "d"}}
    with AuditLog(tmp_path / "a.duckdb", load_private_key(key), masking=masking) as log:
        log.append("decision", actor="sue", payload={"request": request, "decision": {"effect": "deny"}})
    text = stored(tmp_path / "a.duckdb")
    assert EMAIL not in text and "/request/principal/attrs/email" in text


def test_eval_audit_applies_the_mask_beside_the_database(tmp_path):
    key = tmp_path / "k.key"
    generate_key(key)
    (tmp_path / "policyengine.mask.yaml").write_text("drop:\n  - /request/principal/attrs/email\n")
    request = {"principal": {"id": "sue", "email": EMAIL, "roles": ["analyst"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "finance/invoices"}}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", str(data_path("rules")),
                           "--audit", str(tmp_path / "a.duckdb"), "--key", str(key)], input=json.dumps(request),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = stored(tmp_path / "a.duckdb", "decision")
    assert text and EMAIL not in text


MALFORMED_ATTRS = {
    # a request whose ``attrs`` is not an object is denied as malformed, and logged as sent: the attribute
    # beside ``id`` cannot move under ``attrs``, and the mask must find it where it is
    "principal attrs a string": ({"id": "sue", "roles": ["analyst"], "email": EMAIL, "attrs": "x"},
                                 {"kind": "dataset", "id": "finance/invoices"}, "/request/principal/attrs/email"),
    "principal attrs a list": ({"id": "sue", "roles": ["analyst"], "email": EMAIL, "attrs": [1]},
                               {"kind": "dataset", "id": "finance/invoices"}, "/request/principal/attrs/email"),
    "resource attrs a number": ({"id": "sue", "roles": ["analyst"]},
                                {"kind": "dataset", "id": "finance/invoices", "owner": EMAIL, "attrs": 7},
                                "/request/resource/attrs/owner"),
    "a star under attrs": ({"id": "sue", "roles": ["analyst"], "email": EMAIL, "attrs": "x"},
                           {"kind": "dataset", "id": "finance/invoices"}, "/request/principal/attrs/*"),
}


@pytest.mark.parametrize("case", MALFORMED_ATTRS)
@pytest.mark.parametrize("action", ["drop", "hash"])
def test_an_attribute_beside_a_malformed_attrs_is_still_masked(tmp_path, case, action):
    principal, resource, pointer = MALFORMED_ATTRS[case]
    key = tmp_path / "k.key"
    generate_key(key)
    (tmp_path / "policyengine.mask.yaml").write_text(f"{action}:\n  - {pointer}\n")
    request = {"principal": principal, "action": "read", "resource": resource}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", str(data_path("rules")),
                           "--audit", str(tmp_path / "a.duckdb"), "--key", str(key)], input=json.dumps(request),
                          capture_output=True, text=True, timeout=120, check=False)
    assert "must be an object" in proc.stdout, proc.stderr  # denied as malformed, and recorded
    text = stored(tmp_path / "a.duckdb", "decision")
    assert EMAIL not in text and pointer in json.loads(text)["_masked"][action]
    kept = json.loads(text)["request"]
    assert kept["principal"]["id"] == "sue" and kept["resource"]["kind"] == "dataset"  # the rest as sent
    assert "attrs" in kept["principal" if "principal" in pointer else "resource"]


SHADOWED = """\
package shop
role analyst
rule analysts_read
    allow role analyst to read dataset "*"
"""
ID_MASKS = {  # where the mask of the principal's id comes from, and what the actor column may then show
    "mask file, hash": ("policyengine.mask.yaml", "hash:\n  - /request/principal/id\n", "sha256:"),
    "mask file, drop": ("policyengine.mask.yaml", "drop:\n  - /request/principal/id\n", None),
    "rule file, hash": ("live/masks.policy", "package masks\nmask principal.id hash\n", "sha256:"),
    "rule file, drop": ("live/masks.policy", "package masks\nmask principal.id drop\n", None),
    "the whole principal dropped": ("policyengine.mask.yaml", "drop:\n  - /request/principal\n", None),
    "the whole principal hashed": ("policyengine.mask.yaml", "hash:\n  - /request/principal\n", None),
}


@pytest.mark.parametrize("case", ID_MASKS)
def test_serve_fills_the_actor_column_from_the_masked_request(tmp_path, case):
    """The actor column sits beside the payload: a masked principal id must not be kept there in clear."""
    where, text, actor = ID_MASKS[case]
    for name, rules in (("live", SHADOWED), ("candidate", SHADOWED.replace('"*"', '"none/*"'))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shop.policy").write_text(rules)
    (tmp_path / where).write_text(text)
    secret = "sue.secret.id"
    request = {"principal": {"id": secret, "roles": ["analyst"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "sales"}}
    with Server(tmp_path, "--rules", "live", "--shadow", "candidate", "--no-access-log") as server:
        assert server.post("/v1/decide", request).json()["effect"] == "allow"
    with duckdb.connect(str(server.db), read_only=True) as conn:
        rows = conn.execute("SELECT event, actor FROM audit_log WHERE event IN ('decision', 'shadow_diff')").fetchall()
    assert sorted(event for event, _ in rows) == ["decision", "shadow_diff"]  # the candidate denies: recorded
    for event, got in rows:
        assert (got if actor is None else got[:len(actor)]) == actor, (event, got)
    assert secret not in json.dumps(audit_records(server.db))


UNREADABLE_MASKS = {  # a mask file meant to be there that cannot be read: nothing is written, rather than unmasked
    "a link to a file that is gone": (lambda p: p.symlink_to(p.parent / "gone.yaml"), "No such file or directory"),
    "a folder": (lambda p: p.mkdir(), "Is a directory"),
}


@pytest.mark.parametrize("case", UNREADABLE_MASKS)
@pytest.mark.parametrize("command", ["eval", "run"])
def test_a_mask_file_beside_the_database_that_cannot_be_read_stops_the_write(tmp_path, case, command):
    make, why = UNREADABLE_MASKS[case]
    make(tmp_path / "policyengine.mask.yaml")
    key = tmp_path / "policyengine.key"
    generate_key(key)
    request = {"principal": {"id": "sue", "email": EMAIL, "roles": ["analyst"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "finance/invoices"}}
    args = {"eval": ["eval", "--rules", str(data_path("rules")), "--audit", "policyengine.duckdb", "--key", str(key)],
            "run": ["run", "fraud-routing", "--limit", "1"]}[command]
    proc = subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=tmp_path, input=json.dumps(request),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"policyengine.mask.yaml: cannot read masking config: {why}" in proc.stderr
    db = tmp_path / "policyengine.duckdb"
    assert not db.exists() or "decision" not in stored(db)


QUOTED = """\
package hr
role agent
mask context.ssn drop
mask principal.email hash
mask data.address drop
mask data.salary hash
schema typed
    attribute context.ssn number
    attribute principal.attrs.email enum ["a@x.com"]
    attribute data.address number
    attribute data.salary string
rule agents_read
    allow role agent to read dataset "hr/**"
"""
# each masked field sent with the wrong type: the schema's error quotes the value, in the decision's errors and reasons
QUOTED_VALUES = {
    "a dropped string": ("context.ssn", "123-45-6789", '"(masked)"'),
    "a hashed string": ("principal.email", EMAIL, '"sha256:'),
    "a long string, quoted cut short": ("data.address", "Flat 4, 1234 Long Street Name, Springfield, ZZ1 2YY",
                                        '"(masked)"'),
    "a hashed number": ("data.salary", 85123, "number sha256:"),
}


def test_a_masked_value_quoted_by_the_decision_is_masked_there_too(tmp_path):
    (tmp_path / "hr.policy").write_text(QUOTED)
    key = tmp_path / "k.key"
    generate_key(key)
    request = {"principal": {"id": "sue", "roles": ["agent"], "email": EMAIL}, "action": "read",
               "resource": {"kind": "dataset", "id": "hr/1"}, "context": {"ssn": "123-45-6789"},
               "data": {"address": QUOTED_VALUES["a long string, quoted cut short"][1], "salary": 85123}}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", "hr.policy", "--audit", "a.duckdb",
                           "--key", str(key)], cwd=tmp_path, input=json.dumps(request), capture_output=True, text=True,
                          timeout=120, check=False)
    errors = json.loads(proc.stdout)["errors"]  # the caller sees what it sent
    assert [e.split(":")[0] for e in errors] == [field for field, _, _ in QUOTED_VALUES.values()]
    record = json.loads(stored(tmp_path / "a.duckdb", "decision"))
    kept = dict(zip([field for field, _, _ in QUOTED_VALUES.values()], record["decision"]["errors"], strict=True))
    messages = " ".join(r["message"] for r in record["decision"]["reasons"])
    for case, (field, value, shown) in QUOTED_VALUES.items():
        sent = json.dumps(value)[1:13] if isinstance(value, str) else str(value)
        assert sent not in kept[field] and sent not in messages, case
        assert shown in kept[field], (case, kept[field])


def test_a_masked_value_inside_a_rule_id_leaves_the_rule_id_alone(tmp_path):
    """Quotations are words of their own: a hashed principal id "agents" keeps the rule hr.agents_read readable."""
    (tmp_path / "hr.policy").write_text("package hr\nrole agent\nmask principal.id hash\nrule agents_read\n"
                                        '    allow role agent to read dataset "hr/**"\n')
    key = tmp_path / "k.key"
    generate_key(key)
    request = {"principal": {"id": "agents", "roles": ["agent"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "hr/1"}, "context": {"note": "asked by agents today"}}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", "hr.policy", "--audit", "a.duckdb",
                           "--key", str(key)], cwd=tmp_path, input=json.dumps(request), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(stored(tmp_path / "a.duckdb", "decision"))
    assert [r["rule"] for r in record["decision"]["reasons"]] == ["hr.agents_read"]
    hashed = record["request"]["principal"]["id"]
    assert hashed.startswith("sha256:") and record["request"]["context"]["note"] == f"asked by {hashed} today"


def test_models_unblock_note_is_masked(tmp_path):
    key = tmp_path / "k.key"
    generate_key(key)
    db = tmp_path / "a.duckdb"
    with AuditLog(db, load_private_key(key)) as log:
        log.append("policy_loaded", payload={"files": [], "rules": 0})
    con = duckdb.connect(str(db))
    ensure_blocks_table(con)
    add_block(con, "m", "r", "x", datetime.now(UTC))
    con.close()
    (tmp_path / "policyengine.mask.yaml").write_text("drop:\n  - /note\nhash:\n  - /by\n")
    unblock(db, "m", by="sue", note=f"called {EMAIL}", key=key)
    text = stored(db, "model_unblocked")
    assert EMAIL not in text and '"by":"sha256:' in text
    con = duckdb.connect(str(db))  # the block list, which `report model_blocks` prints, keeps the same
    (by, note), = con.execute("SELECT unblocked_by, note FROM model_blocks").fetchall()
    con.close()
    assert note is None and by.startswith("sha256:") and by in text
    with duckdb.connect(str(db), read_only=True) as conn:  # the actor column repeats by: as the payload shows it
        assert conn.execute("SELECT actor FROM audit_log WHERE event = 'model_unblocked'").fetchall() == [(by,)]


@pytest.mark.parametrize(("mask", "shown"), [("hash", "sha256:"), ("drop", None)])
def test_an_approvers_column_shows_what_the_masked_payload_shows(tmp_path, mask, shown):
    """``approve``: the approval record's actor column is its approver; masked in the payload, masked there."""
    invoice = {"id": "INV-M1", "vendor": "Acme Metals", "vendor_country": "DE", "vendor_region": "EU",
               "amount": 25_000.0, "currency": "EUR", "po_number": "PO-41000", "classification": "confidential",
               "true_exception": "none", "vendor_age_days": 900, "vendor_status": "active"}
    (tmp_path / "invoice.json").write_text(json.dumps([invoice]))
    (tmp_path / "sure.yaml").write_text("models:\n  classifier_small: {accuracy: 1.0, confidence: 0.95}\n")
    (tmp_path / "policyengine.mask.yaml").write_text(f"{mask}:\n  - /approver\n")

    def pe(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    (run,) = json.loads(pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml",
                           "--json"))["runs"]
    pe("approve", run["run_id"], "--as", "alice")
    with duckdb.connect(str(tmp_path / "policyengine.duckdb"), read_only=True) as conn:
        (actor, approver), = conn.execute(
            "SELECT actor, payload ->> 'approver' FROM audit_log WHERE event = 'approval'").fetchall()
    assert actor == approver and (actor is None if shown is None else actor.startswith(shown))


AUTHZEN = {"subject": {"type": "user", "id": "sue.secret.id", "properties": {"roles": ["analyst"], "email": EMAIL}},
           "action": {"name": "read"}, "resource": {"type": "dataset", "id": "sales"}}
MALFORMED_AUTHZEN = {  # each is denied with a 400 and recorded: in the shape the masks name
    "a subject type that is no kind": {**AUTHZEN, "subject": {**AUTHZEN["subject"], "type": "robot"}},
    "no resource type": {**AUTHZEN, "resource": {"id": "sales"}},
    "a context key twice": {**AUTHZEN, "action": {"name": "read", "properties": {"hour": 9}}, "context": {"hour": 10}},
}


@pytest.mark.parametrize("case", MALFORMED_AUTHZEN)
@pytest.mark.parametrize("path", ["/access/v1/evaluation", "/access/v1/evaluations"])
def test_a_malformed_authzen_evaluation_is_recorded_masked(tmp_path, case, path):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "shop.policy").write_text(SHADOWED)
    (tmp_path / "policyengine.mask.yaml").write_text(
        "drop:\n  - /request/principal/attrs/email\nhash:\n  - /request/principal/id\n")
    evaluation = MALFORMED_AUTHZEN[case]
    body = evaluation if path.endswith("evaluation") else {"evaluations": [evaluation]}
    with Server(tmp_path, "--rules", "live", "--no-access-log") as server:
        answer = server.post(path, body)
    assert answer.status_code in (200, 400) and '"decision": true' not in json.dumps(answer.json())
    (decision,) = [p for event, p in audit_records(server.db).values() if event == "decision"]
    assert decision["decision"]["effect"] == "deny" and decision["decision"]["errors"]
    assert EMAIL not in json.dumps(decision) and "sue.secret.id" not in json.dumps(decision)
    assert decision["request"]["principal"]["id"].startswith("sha256:")


NATIVE = {"principal": {"id": "sue.secret.id", "roles": ["analyst"], "email": EMAIL}, "action": "read",
          "resource": {"kind": "dataset", "id": "sales"}}
LISTED = {  # a body that is a list where one request was due: denied (400) and recorded as sent, masked
    "/v1/decide, a list": ("/v1/decide", [NATIVE]),
    "/v1/explain, a list": ("/v1/explain", [NATIVE]),
    "/v1/decide/batch, an item that is a list": ("/v1/decide/batch", [[NATIVE]]),
    "/v1/decide/batch, lists in lists": ("/v1/decide/batch", [[[NATIVE], NATIVE]]),
}


@pytest.mark.parametrize("case", LISTED)
def test_a_request_sent_inside_a_list_is_recorded_masked(tmp_path, case):
    path, body = LISTED[case]
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "shop.policy").write_text(SHADOWED)
    (tmp_path / "policyengine.mask.yaml").write_text(
        "drop:\n  - /request/principal/attrs/email\nhash:\n  - /request/principal/id\n")
    with Server(tmp_path, "--rules", "live", "--no-access-log") as server:
        server.post(path, body)
    (decision,) = [p for event, p in audit_records(server.db).values() if event == "decision"]
    assert decision["decision"]["effect"] == "deny" and isinstance(decision["request"], list)
    assert EMAIL not in json.dumps(decision) and "sue.secret.id" not in json.dumps(decision)
    assert "/request/principal/id" in decision["_masked"]["hash"]


ECHO_POLICY = """\
package gw
role caller
model echo
    provider "openai-compatible" region "eu-west-1" hosting external
    cost 1 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
"""


@pytest.mark.parametrize("audit_prompts", ["hash", "masked"])
def test_an_upstream_error_that_quotes_the_prompt_keeps_it_out_of_the_gateway_log(tmp_path, audit_prompts):
    """Providers' 400 answers quote the request; the call's ``error`` must not carry the prompt into the log."""
    secret = "the merger with Initech closes on Friday"
    with start_upstream(tmp_path) as upstream:
        (tmp_path / "gw.policy").write_text(ECHO_POLICY)
        keys = [{"sha256": hashlib.sha256(b"sk-1").hexdigest(), "name": "k",
                 "principal": {"id": "bob", "roles": ["caller"]}}]
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}))
        (tmp_path / "providers.yaml").write_text(yaml.safe_dump(
            {"models": {"echo": {"base_url": upstream.url + "/v1", "model": "echo400"}}}))
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(
            {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "db": "gw.duckdb",
             "key": "gw.key", "audit_prompts": audit_prompts}))
        with start_gateway(tmp_path, tmp_path / "gateway.yaml") as gateway:
            answer = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-1"},
                                json={"model": "echo", "messages": [{"role": "user", "content": secret}]}, timeout=30)
    (call,) = [p for event, p in audit_records(tmp_path / "gw.duckdb").values() if event == "model_call"]
    assert "Initech" not in json.dumps([call["error"], call["attempts"]])
    if audit_prompts == "hash":  # no clear text anywhere (masked keeps the prompt with its findings redacted)
        assert "Initech" not in json.dumps(call)
    assert call["status"] == "error" and "HTTP 400 from upstream (invalid_request_error)" in call["error"]
    assert answer.status_code == 502 and "HTTP 400 from upstream (invalid_request_error)" in answer.text


HASHED_VALUES = {
    "lone surrogate": "caf\ud800e",
    "19-digit number": 1234567890123456789,
    "nested": {"n": 98765432109876543210, "s": "\udfff"},
}


@pytest.mark.parametrize("case", HASHED_VALUES)
def test_hashing_a_value_without_canonical_json_neither_fails_nor_quotes_it(case):
    value = HASHED_VALUES[case]
    masking = Masking(hash=(parse_pointer("/request/data/secret"),))
    out = masking.apply({"request": {"data": {"secret": value}}})
    hashed = out["request"]["data"]["secret"]
    assert hashed.startswith("sha256:") and str(value) not in json.dumps(out)
    assert masking.apply({"request": {"data": {"secret": value}}}) == out  # stable


def test_a_star_mask_records_the_pattern_not_the_names_it_matched():
    masking = Masking(drop=(parse_pointer("/request/data/people/*"),), hash=(parse_pointer("/request/data/ids/*"),))
    out = masking.apply({"request": {"data": {"people": {EMAIL: 1, "bob@example.com": 2}, "ids": ["a", "b"]}}})
    assert out["_masked"] == {"drop": ["/request/data/people/*"], "hash": ["/request/data/ids/*"]}
    assert EMAIL not in json.dumps(out) and "bob@example.com" not in json.dumps(out)


@pytest.mark.parametrize("pointer", ["/request/data/²", "/request/data/١", "/items/²/x", "/items/0"])
def test_pointers_with_non_ascii_digits_never_break_a_write(pointer):
    masking = Masking(drop=(parse_pointer(pointer),))
    payload = {"request": {"data": {"²": "x", "a": 1}}, "items": [{"x": 1}]}
    out = masking.apply(payload)
    assert isinstance(out, dict)


def test_a_mask_file_that_is_not_utf8_is_one_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"drop:\n  - /request/data/\xe9\n")
    with pytest.raises(AuditError, match=r"m.yaml:2: masking config is not UTF-8 text"):
        load_masking(path)
