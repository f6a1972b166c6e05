"""A model suspended by a bias or drift breach is denied until it is unblocked.

The monitor records the block in the audit database; `eval --audit` and the
orchestrator read it when they load the policy. These run the real CLI on a
real DuckDB file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml
from gateway_process import start_gateway
from server_process import Server

from policyengine.store.blocklist import add_block, ensure_blocks_table

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "rules" / "design_sample.policy")
REQUEST = {
    "principal": {"id": "invoice_classifier", "type": "agent"},
    "action": "invoke",
    "resource": {"kind": "model", "id": "classifier_small"},
    "context": {"tokens": 100},
}


def _eval(tmp_path: Path, ok: bool = True) -> dict:
    result = subprocess.run(
        ["policyengine", "eval", "--rules", SAMPLE, "--audit", str(tmp_path / "audit.duckdb"),
         "--key", str(tmp_path / "k.key")],
        input=json.dumps(REQUEST), capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == (0 if ok else 1), result.stderr
    return json.loads(result.stdout)


def test_a_blocked_model_is_denied_until_unblocked(tmp_path):
    subprocess.run(["policyengine", "keys", "generate", "--out", str(tmp_path / "k.key")], check=True,
                   capture_output=True)
    assert _eval(tmp_path)["effect"] == "allow"

    con = duckdb.connect(str(tmp_path / "audit.duckdb"))
    ensure_blocks_table(con)
    add_block(con, "classifier_small", "finance.invoices.payment_fairness", "disparate_impact 0.5 breaches >= 0.8",
              datetime.now(UTC))
    con.close()

    blocked = _eval(tmp_path)
    assert blocked["effect"] == "deny"
    assert any("classifier_small" in r["message"] and "block" in r["message"] for r in blocked["reasons"])

    unblock = subprocess.run(["policyengine", "models", "unblock", "classifier_small",
                              "--db", str(tmp_path / "audit.duckdb"), "--by", "risk-officer",
                              "--key", str(tmp_path / "k.key")],
                             capture_output=True, text=True)
    assert unblock.returncode == 0, unblock.stderr
    assert _eval(tmp_path)["effect"] == "allow"


def _held_in_a_file_that_stores_code(db: Path) -> None:
    """``classifier_small`` blocked in ``db``, which also holds a view (an operator's report, say): read as
    evidence, such a file is refused, so its block list cannot be read."""
    con = duckdb.connect(str(db))
    ensure_blocks_table(con)
    add_block(con, "classifier_small", "finance.invoices.payment_fairness", "disparate_impact 0.5 breaches >= 0.8",
              datetime.now(UTC))
    con.execute("CREATE VIEW blocked_report AS SELECT * FROM model_blocks")
    con.close()


def _served(tmp_path: Path) -> dict:
    server = Server(tmp_path, "--rules", SAMPLE)
    try:
        body = server.post("/v1/decide", REQUEST).json()
        return body.get("decision", body)  # a refusal answers 400, the decision beside its problems
    finally:
        server.stop()


def _gateway(tmp_path: Path) -> dict:
    """A chat completion through a gateway whose database is ``audit.duckdb``, as a decision (effect, reasons)."""
    keys = [{"sha256": hashlib.sha256(b"sk-agent").hexdigest(), "principal": REQUEST["principal"]}]
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"rules": [SAMPLE], "keys": "keys.yaml",
                                                           "db": "audit.duckdb", "key": "k.key"}), encoding="utf-8")
    with start_gateway(tmp_path, tmp_path / "gateway.yaml") as gateway:
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"authorization": "Bearer sk-agent"},
                            json={"model": "classifier_small", "messages": [{"role": "user", "content": "hi"}]},
                            timeout=30).json()
    if "error" not in answer:
        return {"effect": "allow", "reasons": []}
    return {"effect": "deny", "reasons": [{"message": answer["error"]["message"]}]}


@pytest.mark.parametrize("decide", [lambda path: _eval(path, ok=False), _served, _gateway],
                         ids=["eval", "serve", "gateway"])
def test_a_block_list_that_cannot_be_read_denies_every_model_naming_why(tmp_path, decide):
    subprocess.run(["policyengine", "keys", "generate", "--out", str(tmp_path / "k.key")], check=True,
                   capture_output=True)
    _held_in_a_file_that_stores_code(tmp_path / "audit.duckdb")
    decision = decide(tmp_path)
    assert decision["effect"] == "deny"
    (reason,) = decision["reasons"]
    assert "the model block list could not be read" in reason["message"]
    assert "stores view blocked_report" in reason["message"]
