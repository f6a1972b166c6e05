"""End to end: `policyengine report evidence` over a real, signed audit log.

The log is written by the real CLI: marketing runs (one approved, one rejected,
one left to expire), EEA data denied in a US region, and the monitor. The
evidence pack must agree with the log read directly, say that the log verified
against its newest checkpoint, and say so no longer once a record is altered.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.test_cli_workflows import pe
from tests.test_marketing_workflow import SURE, customer

SECTIONS = {"policies", "policy_loads", "decisions", "runs", "oversight", "models", "monitoring", "incidents"}


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evidence")
    items = [customer("E-ok"), customer("E-eu-in-us", processing_region="us-east-1"),
             customer("E-approve", audience_size=200_000), customer("E-reject", spend_usd=80_000),
             customer("E-expire", audience_size=300_000)]
    (d / "in.json").write_text(json.dumps(items))
    (d / "sure.yaml").write_text(SURE)
    pe("run", "marketing-campaign", "--input", "in.json", "--providers", "sure.yaml", cwd=d)
    runs = {r["item_id"]: r["run_id"] for r in map(json.loads, pe("runs", "list", "--json", cwd=d).stdout.splitlines())}
    pe("approve", runs["test/E-approve"], "--as", "lena", "--note", "brand team agreed", cwd=d)
    pe("reject", runs["test/E-reject"], "--as", "lena", cwd=d)
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()  # past the 2-day launch deadline
    pe("runs", "expire", "--now", later, "--clock-override", cwd=d)
    pe("monitor", cwd=d)
    return d


def evidence(d: Path, *args: str) -> dict:
    return json.loads(pe("report", "evidence", "--format", "json", *args, cwd=d).stdout)


def sql(d: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(d / "policyengine.duckdb"), read_only=True) as conn:
        return conn.execute(query).fetchall()


def test_the_evidence_agrees_with_the_log(log):
    e = evidence(log)
    assert set(e["sections"]) == SECTIONS
    effects = dict(sql(log, "SELECT payload->>'$.decision.effect', count(*) FROM audit_log WHERE event = 'decision' "
                            "GROUP BY ALL"))
    assert e["summary"]["decisions_by_effect"] == {k: effects.get(k, 0) for k in ("allow", "deny", "escalate")}
    (hashes,) = sql(log, "SELECT list(DISTINCT policy_hash) FROM audit_log WHERE policy_hash IS NOT NULL")[0]
    assert [p["policy_hash"] for p in e["sections"]["policies"]["rows"]] == hashes
    models = {m["model"] for m in e["sections"]["models"]["rows"]}
    assert models == {"segmenter", "content_selector"}
    incidents = {(i["kind"], i["rule"]) for i in e["sections"]["incidents"]["rows"]}
    assert ("denied request", "finance.invoices.eu_personal_data") in incidents


def test_human_oversight_names_who_decided_and_counts_overrides_and_expiries(log):
    e = evidence(log)
    s = e["summary"]
    assert s["approvals_by_outcome"] == {"approved": 1, "rejected": 1, "expired": 1}
    assert s["approvers"] == ["lena"] and s["overrides"] == 1 and s["expiries"] == 1
    rows = e["sections"]["oversight"]["rows"]
    assert {(r["approver"], r["outcome"]) for r in rows} == {("lena", "approved"), ("lena", "rejected"),
                                                            ("(deadline)", "expired")}
    assert all(r["gate"] == "marketing.personalization.large_campaign_launch" and r["role"] == "marketing_lead"
               and r["median_latency_s"] >= 0 for r in rows)


def test_monitoring_results_include_the_segmenter_bias_rule(log):
    rows = evidence(log)["sections"]["monitoring"]["rows"]
    (parity,) = [r for r in rows if r["rule"] == "marketing.personalization.segment_targeting_parity"]
    assert parity["kind"] == "bias" and parity["model"] == "segmenter" and parity["action"] == "escalate"


def test_the_log_verified_against_its_newest_checkpoint(log):
    e = evidence(log)
    v = e["audit_verification"]
    (records,) = sql(log, "SELECT count(*) FROM audit_log")[0]
    size, root = sql(log, "SELECT tree_size, root FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1")[0]
    assert v["verified"] is True and v["records"] == records
    assert (v["checkpoint"]["tree_size"], v["checkpoint"]["root"]) == (size, root)
    html_path = log / "evidence.html"
    pe("report", "evidence", "-o", str(html_path), cwd=log)
    html = html_path.read_text()
    for title in ("Policy versions in force", "Human oversight", "Models in use", "Bias and drift monitoring",
                  "Incidents", "Audit verification", "EU AI Act Art. 14", "ISO/IEC 42001"):
        assert title in html
    assert root in html and "verified" in html


def test_an_altered_record_is_reported_as_failed_verification(log, tmp_path):
    shutil.copy(log / "policyengine.duckdb", tmp_path / "policyengine.duckdb")
    shutil.copy(log / "policyengine.key.pub.pem", tmp_path / "policyengine.key.pub.pem")
    with duckdb.connect(str(tmp_path / "policyengine.duckdb")) as conn:
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    v = evidence(tmp_path)["audit_verification"]
    assert v["verified"] is False and "seq 3" in v["summary"] and v["checkpoint"] is None


def test_without_a_public_key_the_pack_says_the_log_was_not_verified(log, tmp_path):
    shutil.copy(log / "policyengine.duckdb", tmp_path / "policyengine.duckdb")
    v = evidence(tmp_path)["audit_verification"]
    assert v["verified"] is None and "no trusted public key" in v["summary"]


def test_a_period_before_the_log_is_empty_and_an_inverted_one_is_refused(log):
    e = evidence(log, "--since", "2000-01-01", "--until", "2000-02-01")
    assert e["summary"]["decisions"] == 0 and all(not s["rows"] for s in e["sections"].values())
    bad = pe("report", "evidence", "--since", "2000-02-01", "--until", "2000-01-01", cwd=log, ok=False)
    assert bad.returncode == 1 and "the period is empty" in bad.stderr


def test_a_live_segment_left_out_is_said_and_the_folder_is_not_verified_as_a_whole(tmp_path):
    """The segment a writer holds cannot be read: its records are in no number, so the pack must not say verified."""
    from policyengine.audit import generate_key, load_private_key
    from policyengine.audit.segments import RollPolicy, SegmentedLog

    (tmp_path / "audit").mkdir()
    generate_key(tmp_path / "policyengine.key")
    log = SegmentedLog(tmp_path / "audit", "srv", load_private_key(tmp_path / "policyengine.key"),
                       roll=RollPolicy(records=4), flush_interval=0)
    try:
        for effect in ["allow"] * 6 + ["deny"] * 3:  # the denials land in the third segment, still being written
            log.append("decision", actor="a", payload={"request": {}, "decision": {"effect": effect, "reasons": []}})
        log.flush()
        live = evidence(tmp_path, "--db", "audit")
        page = pe("report", "denials", "--db", "audit", "--format", "html", cwd=tmp_path).stdout
    finally:
        log.close()
    assert live["summary"]["decisions_by_effect"]["deny"] == 0  # what was read
    assert live["summary"]["log_verified"] is None and live["audit_verification"]["verified"] is None
    assert "srv.000003.duckdb" in live["audit_verification"]["summary"]
    assert "not verified" in page and "srv.000003.duckdb" in page
    sealed = evidence(tmp_path, "--db", "audit")  # the writer gone: every segment read, and verified
    assert sealed["summary"]["decisions_by_effect"]["deny"] == 3 and sealed["summary"]["log_verified"] is True
