"""A block the monitor signs is a block in force: the block list is written before the alert is signed.

Before, the breach's `alert` (action block) was appended first and the block
list written after; when that write failed (a store error, a constraint, a lost
connection), the command stopped with one line but the alert was still flushed:
the signed log, and `report model_blocks` built from it, showed the model
blocked (still_blocked true) while the engine allowed it. Real signed audit file,
the real command in a subprocess, a block list that refuses the write.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import one_error_line, pe
from test_monitor import POLICY, story, write_signed_db


CREATE = Path(__file__).parent.parent / "policyengine" / "store" / "sql" / "embedded" / "model_blocks_create.sql"

# How the block list refuses a new block while it can still be read.
REFUSING = {
    "a column the monitor does not fill": ("note         VARCHAR", "note VARCHAR, approved_by VARCHAR NOT NULL"),
    "a check no model passes": ("model        VARCHAR     NOT NULL,", "model VARCHAR NOT NULL CHECK (model = ''),"),
}


@pytest.mark.parametrize("how", REFUSING, ids=list(REFUSING))
def test_a_block_that_cannot_be_written_is_not_signed(tmp_path: Path, how: str) -> None:
    audit = pytest.importorskip("policyengine.audit")
    key = audit.generate_key(tmp_path / "policyengine.key")
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    db = write_signed_db(tmp_path / "audit.duckdb", key, story())
    old, new = REFUSING[how]
    sql = CREATE.read_text(encoding="utf-8")
    assert old in sql
    con = duckdb.connect(str(db))
    con.execute(sql.replace(old, new))
    con.close()
    r = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override",
           "--format", "csv", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    blocks = pe("report", "model_blocks", "--db", db, "--format", "json", cwd=tmp_path)
    assert blocks.returncode == 0, blocks.stderr
    assert json.loads(blocks.stdout) == []  # no signed block, as there is none in force
    assert "cannot block classifier_small (risk.classifier_confidence breached)" in one_error_line(r)
    listed = pe("models", "blocked", "--db", db, cwd=tmp_path)
    assert listed.stdout == "no model is blocked\n", listed.stdout
    alerts = pe("query", "--db", db, "--format", "json",
                "SELECT payload->>'rule' AS rule, payload->>'action' AS action FROM audit_log WHERE event = 'alert' "
                "ORDER BY seq", cwd=tmp_path)
    assert json.loads(alerts.stdout) == [{"rule": "risk.payment_fairness", "action": "escalate"}]  # those before it
    verified = pe("audit", "verify", "--db", db, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_block_list_that_cannot_be_read_stops_the_monitor_with_one_line_and_records_nothing(tmp_path: Path) -> None:
    """The monitor reads the block list before it records anything: when that read fails (a store error, a
    table whose columns are not the block list's), it says so in one line, exits 1, and signs no alert."""
    audit = pytest.importorskip("policyengine.audit")
    key = audit.generate_key(tmp_path / "policyengine.key")
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    db = write_signed_db(tmp_path / "audit.duckdb", key, story())
    sql = CREATE.read_text(encoding="utf-8")
    assert "unblocked_at TIMESTAMPTZ," in sql
    con = duckdb.connect(str(db))
    con.execute(sql.replace("unblocked_at TIMESTAMPTZ,", "lifted_at TIMESTAMPTZ,"))
    con.close()
    r = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override",
           "--format", "csv", cwd=tmp_path)
    assert "cannot read the block list" in one_error_line(r) and "nothing was recorded" in one_error_line(r)
    alerts = pe("query", "--db", db, "--format", "json",
                "SELECT count(*) AS n FROM audit_log WHERE event = 'alert'", cwd=tmp_path)
    assert json.loads(alerts.stdout) == [{"n": 0}]
