"""Masks declared in rule files (``mask data.customer.email hash``) reach the audit log.

They apply together with the masking config file, through the one masking owner
(``policyengine.audit.masking``), on the request shape the audit writer records.
End to end: ``policyengine eval --audit`` in a temp dir, then the DuckDB log read back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import duckdb
import pytest

from policyengine.audit import generate_key
from policyengine.audit.masking import request_pointer
from policyengine.resources import data_path

EMAIL = "sue.secret@example.com"
SSN = "123-45-6789"


@pytest.mark.parametrize(("path", "pointer"), [
    ("data.customer.email", "/request/data/customer/email"),
    ("context.ssn", "/request/context/ssn"),
    ("principal.email", "/request/principal/attrs/email"),  # attributes beside id are read from attrs
    ("principal.attrs.email", "/request/principal/attrs/email"),
    ("principal.id", "/request/principal/id"),
    ("resource.owner", "/request/resource/attrs/owner"),
    ("resource.kind", "/request/resource/kind"),
    ("data.a~b", "/request/data/a~0b"),
])
def test_a_rule_file_path_names_the_pointer_the_log_uses(path, pointer):
    root, *parts = path.split(".")
    assert request_pointer(root, tuple(parts)) == pointer


def _decisions(db) -> list[dict]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT payload FROM audit_log WHERE event = 'decision' ORDER BY seq").fetchall()
    return [json.loads(r[0]) for r in rows]


CASES = [
    # rule-file masks, masking config beside the database (or None), what the decision record keeps
    ("mask data.customer.email hash\n", None,
     {"hash": ["/request/data/customer/email"], "drop": []}),
    ("mask principal.email drop\n", None,
     {"hash": [], "drop": ["/request/principal/attrs/email"]}),
    ("mask data.customer.email drop\nmask context.ssn hash\n", None,
     {"hash": ["/request/context/ssn"], "drop": ["/request/data/customer/email"]}),
    ("mask data.customer.email hash\n", "drop:\n  - /request/principal/attrs/email\n",  # both apply
     {"hash": ["/request/data/customer/email"], "drop": ["/request/principal/attrs/email"]}),
]


@pytest.mark.parametrize(("masks", "config", "masked"), CASES)
def test_eval_audit_applies_the_masks_the_rules_declare(tmp_path, masks, config, masked):
    rules = tmp_path / "rules"
    shutil.copytree(data_path("rules"), rules)
    (rules / "pii.policy").write_text("package pii\n" + masks)
    key = tmp_path / "k.key"
    generate_key(key)
    if config is not None:
        (tmp_path / "policyengine.mask.yaml").write_text(config)
    request = {"principal": {"id": "sue", "email": EMAIL, "roles": ["analyst"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "finance/invoices"},
               "data": {"customer": {"email": EMAIL, "tier": "gold"}}, "context": {"ssn": SSN}}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", str(rules),
                           "--audit", str(tmp_path / "a.duckdb"), "--key", str(key)], input=json.dumps(request),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    (record,) = _decisions(tmp_path / "a.duckdb")
    assert record["_masked"] == masked
    logged = record["request"]
    for pointer in masked["drop"]:
        *parents, last = pointer.split("/")[2:]
        node = logged
        for part in parents:
            node = node[part]
        assert last not in node
    for pointer in masked["hash"]:
        node = logged
        for part in pointer.split("/")[2:]:
            node = node[part]
        assert node.startswith("sha256:")
    assert logged["data"]["customer"].get("tier") == "gold"  # what no mask names is kept
    if "/request/context/ssn" not in masked["hash"]:
        assert logged["context"]["ssn"] == SSN


def test_eval_audit_refuses_rules_whose_masks_do_not_check(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(data_path("rules"), rules)
    (rules / "pii.policy").write_text("package pii\nmask data.customer.email hsh\n")
    key = tmp_path / "k.key"
    generate_key(key)
    proc = subprocess.run([sys.executable, "-m", "policyengine", "eval", "--rules", str(rules),
                           "--audit", str(tmp_path / "a.duckdb"), "--key", str(key)], input="{}",
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "mask-action" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "a.duckdb").exists() or _decisions(tmp_path / "a.duckdb") == []


def test_a_workflow_session_masks_what_its_rules_declare_with_the_config(tmp_path):
    """The writer behind run, approve and runs ...: the rules' masks once loaded, the config's as always."""
    from policyengine.orchestrator.session import Session, SessionConfig

    rules = tmp_path / "rules"
    shutil.copytree(data_path("rules"), rules)
    (rules / "pii.policy").write_text("package pii\nmask data.customer.email hash\n")
    (tmp_path / "policyengine.mask.yaml").write_text("drop:\n  - /request/context/ssn\n")
    db = tmp_path / "policyengine.duckdb"
    request = {"principal": {"id": "sue"}, "action": "read", "resource": {"kind": "dataset", "id": "d"},
               "data": {"customer": {"email": EMAIL}}, "context": {"ssn": SSN}}
    with Session(SessionConfig(db=db, key=tmp_path / "k.key", rules=[rules], create_key=True)) as session:
        session.audit.append("decision", actor="sue", payload={"request": request, "decision": {"effect": "deny"}})
    (record,) = _decisions(db)
    assert record["_masked"] == {"hash": ["/request/data/customer/email"], "drop": ["/request/context/ssn"]}
    assert EMAIL not in json.dumps(record) and SSN not in json.dumps(record)
