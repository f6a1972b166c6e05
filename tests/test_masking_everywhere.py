"""Personal data never reaches the audit log unmasked, whatever wrote the record.

Real DuckDB files and Ed25519 keys; the CLI runs as subprocesses. Each row is a
way PII used to slip through (see docs/audit.md, "Masking").
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import duckdb
import pytest

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
