"""A shared block list: a monitor blocks a model in PostgreSQL and a running decision service denies it,
`models unblock --state` lifts it and the service allows it again (real PostgreSQL, real processes, real HTTP)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_process import Server
from test_cli_reporting import pe
from test_monitor import POLICY, story, write_signed_db

REQUEST = {"principal": {"id": "invoice_classifier", "type": "agent"}, "action": "invoke",
           "resource": {"kind": "model", "id": "classifier_small"}}


def effect_becomes(server: Server, wanted: str) -> str:
    """Decide until the service answers ``wanted`` (it re-reads the shared block list about once a second)."""
    deadline = time.monotonic() + 60
    while True:
        effect = server.post("/v1/decide", REQUEST).json()["effect"]
        if effect == wanted or time.monotonic() > deadline:
            return effect
        time.sleep(0.2)


@pytest.mark.postgres
def test_a_block_in_the_shared_store_reaches_a_running_service_and_is_lifted_through_it(postgres_url, tmp_path):
    from policyengine.audit import generate_key

    key = generate_key(tmp_path / "policyengine.key")
    (tmp_path / "risk.policy").write_text(POLICY)
    db = write_signed_db(tmp_path / "audit.duckdb", key, story())
    server = Server(tmp_path, "--rules", "risk.policy", "--state", postgres_url, db="serve.duckdb")
    try:
        assert effect_becomes(server, "allow") == "allow"
        monitored = pe("monitor", "--db", db, "--rules", "risk.policy", "--now", "2026-11-24T12:00:00Z",
                       "--clock-override", "--state", postgres_url, cwd=tmp_path)
        assert monitored.returncode == 0, monitored.stderr
        assert "blocked: classifier_small" in monitored.stderr
        with duckdb.connect(str(db), read_only=True) as con:  # the block went to the shared store, not to --db
            assert con.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = 'model_blocks'").fetchone()[0] == 0
        assert effect_becomes(server, "deny") == "deny"
        listed = pe("models", "blocked", "--state", postgres_url, cwd=tmp_path)
        assert listed.stdout.startswith("classifier_small\tblocked by risk.classifier_confidence"), listed.stderr
        lifted = pe("models", "unblock", "classifier_small", "--db", db, "--by", "risk", "--note", "retrained",
                    "--state", postgres_url, cwd=tmp_path)
        assert (lifted.returncode, lifted.stdout, lifted.stderr) == (0, "unblocked: classifier_small\n", "")
        again = pe("models", "unblock", "classifier_small", "--db", db, "--state", postgres_url, cwd=tmp_path)
        assert again.returncode == 1 and "is not blocked (blocked now: none)" in again.stderr
        assert effect_becomes(server, "allow") == "allow"
    finally:
        server.stop()
    events = json.loads(pe("query", "SELECT actor, payload FROM audit_log WHERE event = 'model_unblocked'",
                           "--db", db, "--format", "json", cwd=tmp_path).stdout)
    assert events == [{"actor": "risk", "payload": {"model": "classifier_small",
                                                    "rules": ["risk.classifier_confidence"],
                                                    "by": "risk", "note": "retrained", "lifted": 1}}]


def test_block_list_commands_refuse_a_state_that_is_not_postgres(tmp_path):
    result = pe("models", "blocked", "--state", str(tmp_path / "x.duckdb"), cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "the block list is shared through postgresql://" in result.stderr


@pytest.mark.postgres
def test_eval_with_a_shared_store_denies_a_model_blocked_there(postgres_url, tmp_path):
    """`eval --state postgresql://...` decides with the shared block list, as `serve --state` and workflow
    commands do: a monitor on another host blocked the model there, not in any file this command reads."""
    from policyengine.store import open_store

    (tmp_path / "risk.policy").write_text(POLICY)
    (tmp_path / "request.json").write_text(json.dumps(REQUEST))
    decide = ["eval", "--rules", "risk.policy", "--input", "request.json", "--state", postgres_url]
    assert json.loads(pe(*decide, cwd=tmp_path).stdout)["effect"] == "allow"
    with open_store(postgres_url) as store:
        store.blocks.block("classifier_small", "risk.classifier_confidence", "confidence 0.41 < 0.6",
                           datetime.now(UTC))
    blocked = json.loads(pe(*decide, cwd=tmp_path).stdout)
    assert blocked["effect"] == "deny"
    assert [r["rule"] for r in blocked["reasons"]] == ["<blocked-model>"]
