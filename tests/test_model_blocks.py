"""A model suspended by a bias or drift breach is denied until it is unblocked.

The monitor records the block in the audit database; `eval --audit` and the
orchestrator read it when they load the policy. These run the real CLI on a
real DuckDB file.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from policyengine.store.blocklist import add_block, ensure_blocks_table

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "rules" / "design_sample.policy")
REQUEST = {
    "principal": {"id": "invoice_classifier", "type": "agent"},
    "action": "invoke",
    "resource": {"kind": "model", "id": "classifier_small"},
    "context": {"tokens": 100},
}


def _eval(tmp_path: Path) -> dict:
    result = subprocess.run(
        ["policyengine", "eval", "--rules", SAMPLE, "--audit", str(tmp_path / "audit.duckdb"),
         "--key", str(tmp_path / "k.key")],
        input=json.dumps(REQUEST), capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
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
