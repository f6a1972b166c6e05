"""The monitor: bias and drift rules evaluated over the audit log, breaches acted on.

A month of baseline calls and a month of current calls for one model, written
into a real DuckDB audit file; the rules are real policy files loaded by the
engine; blocks are read back by the engine through its block list.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policyengine.engine import BlockList, load_policy
from policyengine.reporting import ReportError
from policyengine.reporting.bias import bias_from_csv
from policyengine.reporting.db import open_readonly
from policyengine.reporting.monitor import (
    blocked_models,
    evaluate_all,
    positive_values,
    record,
    unblock,
)
from policyengine.reporting.reports import run_named_report
from policyengine.store.files import DEFAULT_KEY_PATH

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import one_error_line, pe, pe_inprocess
from test_reports import write_audit_db

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)

POLICY = """\
package risk

role model_risk
role ap_agent
agent invoice_classifier
    owner "ap-team@example.com"
    roles ap_agent

model classifier_small
    provider "local" region "eu-west-1" hosting internal
model frontier_llm
    provider "openai-compatible" region "us-east-1" hosting external

rule agents_call_models
    allow role ap_agent to invoke model "*"

bias payment_fairness
    for model classifier_small
    metric disparate_impact of outcome == "auto_resolved" by subject.vendor_region
    threshold >= 0.8
    window 30 days
    min samples 100
    on breach escalate to role model_risk

drift classifier_confidence
    for model classifier_small
    metric psi of output.confidence
    baseline previous 30 days
    threshold < 0.2
    on breach block

drift classifier_confidence_ks
    for model classifier_small
    metric ks of output.confidence
    baseline previous 30 days
    threshold < 0.5
    on breach alert

drift frontier_quiet
    for model frontier_llm
    metric psi of output.confidence
    baseline previous 30 days
    threshold < 0.2
    on breach block
"""

# selection: EU 60 %, US 30 % (impact 0.5: breach); APAC has 10 calls, under min samples
GROUPS = {"EU": (200, 120), "US": (200, 60), "APAC": (10, 1)}


def story() -> list[tuple]:
    rnd = random.Random(7)
    rows = []
    for day in range(60):  # baseline: confidence ~ U(0.5, 1); current: ~ U(0.2, 0.7)
        ts = NOW - timedelta(days=60 - day) + timedelta(hours=1)
        for _ in range(10):
            low = 0.5 if day < 30 else 0.2
            rows.append((ts, "model_call", "invoice_classifier", "invoice-exceptions", "r",
                         {"model": "classifier_small", "output": {"confidence": round(low + rnd.random() / 2, 4)}}, "h"))
    for region, (n, selected) in GROUPS.items():
        for i in range(n):
            rows.append((NOW - timedelta(days=3, minutes=i), "model_call", "invoice_classifier", "invoice-exceptions",
                         "r", {"model": "classifier_small", "subject": {"vendor_region": region},
                               "outcome": "auto_resolved" if i < selected else "manual", "output": {}}, "h"))
    return rows


@pytest.fixture
def setup(tmp_path):
    db = write_audit_db(tmp_path / "audit.duckdb", story())
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    return db, rules


def results_by_rule(db, rules):
    con = open_readonly(db)
    try:
        return {r.rule: r for r in evaluate_all(con, load_policy([rules]).policy_set, NOW)}
    finally:
        con.close()


def test_bias_rule_value_is_the_offline_report_value(setup, tmp_path):
    db, rules = setup
    r = results_by_rule(db, rules)["risk.payment_fairness"]
    lines = ["g,y"] + [f"{g},{int(i < s)}" for g, (n, s) in GROUPS.items() for i in range(n)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    offline = bias_from_csv(tmp_path / "d.csv", outcome="y", positive="1", group="g", min_samples=100)
    assert r.value == offline.disparate_impact == pytest.approx(0.5, abs=1e-12)
    assert r.breach and r.action == "escalate" and r.escalate_to == "model_risk"
    assert r.details["groups"]["APAC"]["judged"] is False
    assert r.window_start == NOW - timedelta(days=30)


def test_drift_rules_compare_the_baseline_month_with_the_current_one(setup):
    db, rules = setup
    got = results_by_rule(db, rules)
    psi = got["risk.classifier_confidence"]
    assert psi.details["n_reference"] == 300 and psi.details["n_current"] == 300
    assert psi.value > 0.2 and psi.breach and psi.action == "block"
    ks = got["risk.classifier_confidence_ks"]
    assert 0.5 < ks.value <= 1.0 and ks.breach and ks.action == "alert"


def test_a_rule_without_data_is_reported_not_fatal(setup):
    db, rules = setup
    quiet = results_by_rule(db, rules)["risk.frontier_quiet"]
    assert quiet.value is None and not quiet.breach
    assert "the reference sample has no values" in quiet.error


def test_record_writes_one_alert_per_result_and_blocks_on_breach(setup):
    db, rules = setup
    results = tuple(results_by_rule(db, rules).values())
    alerts: list[dict] = []
    import duckdb

    con = duckdb.connect(str(db))
    assert record(con, results, alerts.append, NOW) == ("classifier_small",)
    con.close()
    assert len(alerts) == 4
    bias = next(a for a in alerts if a["kind"] == "bias")
    assert (bias["rule"], bias["metric"], bias["threshold"], bias["breach"], bias["action"]) == (
        "risk.payment_fairness", "disparate_impact", ">= 0.8", True, "escalate")
    assert bias["details"]["escalate_to_role"] == "model_risk"
    assert set(bias) == {"kind", "rule", "model", "metric", "value", "threshold", "breach", "action", "details"}
    json.dumps(alerts)  # payloads are plain JSON
    assert blocked_models(db) == {"classifier_small"}


def test_the_engine_denies_a_blocked_model_until_it_is_unblocked(keyed, tmp_path):
    db, rules, _ = keyed
    import duckdb

    results = tuple(results_by_rule(db, rules).values())
    con = duckdb.connect(str(db))
    record(con, results, None, NOW)
    assert blocked_models(con) == {"classifier_small"}  # also from a connection the caller holds
    con.close()
    request = {"principal": {"id": "invoice_classifier", "type": "agent"}, "action": "invoke",
               "resource": {"kind": "model", "id": "classifier_small"}}
    policy = load_policy([rules], blocked=BlockList(blocked_models(db)))
    denied = policy.evaluate(request)
    assert denied.effect == "deny" and any(r.rule == "<blocked-model>" for r in denied.reasons)
    key = tmp_path / "policyengine.key"
    assert unblock(db, "classifier_small", by="risk-officer", note="retrained", key=key) == 1
    assert blocked_models(db) == frozenset()
    assert load_policy([rules], blocked=BlockList(blocked_models(db))).evaluate(request).effect == "allow"
    with pytest.raises(ReportError, match="model 'classifier_small' is not blocked"):
        unblock(db, "classifier_small", by="x", key=key)
    history = run_named_report(db, "model_blocks")  # blocked with no signing key: no signed block to show
    assert history.rows == () and "for classifier_small;" in history.notes[0]
    assert history.notes[1] == ("classifier_small (risk.classifier_confidence): the block list has 1 block(s), "
                                "0 open, the signed log no block")


@pytest.mark.parametrize(
    "expr, values",
    [
        ('outcome == "auto_resolved"', ["auto_resolved"]),
        ('outcome in ["a", "b"]', ["a", "b"]),
        ('outcome == "a" or outcome == "b"', ["a", "b"]),
    ],
)
def test_positive_outcome_forms(tmp_path, expr, values):
    text = POLICY.replace('outcome == "auto_resolved"', expr)
    (tmp_path / "p.policy").write_text(text)
    decl = load_policy([tmp_path / "p.policy"]).policy_set.biases[0].decl
    assert positive_values(decl.positive) == values


# --- the commands ----------------------------------------------------------------------------


def write_signed_db(path: Path, key, rows: list[tuple]) -> Path:
    """The story written by the real audit writer (signed, chained), at the story's past timestamps."""
    from policyengine.audit import AuditLog
    from policyengine.audit import log as audit_log

    clock = [rows[0][0]]
    real, audit_log.utc_now_text = audit_log.utc_now_text, lambda: clock[0].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        with AuditLog(path, key) as log:
            for ts, event, actor, workflow, run_id, payload, _ in sorted(rows, key=lambda r: r[0]):
                clock[0] = ts
                log.append(event, actor=actor, workflow=workflow, run_id=run_id, payload=payload)
    finally:
        audit_log.utc_now_text = real
    return path


@pytest.fixture
def keyed(tmp_path):
    """The story in a signed database, with ./policyengine.key in tmp_path (the commands' working directory)."""
    audit = pytest.importorskip("policyengine.audit")
    key = audit.generate_key(tmp_path / "policyengine.key")
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    return write_signed_db(tmp_path / "audit.duckdb", key, story()), rules, key


def test_monitor_command_blocks_and_models_unblock_lifts(keyed, tmp_path):
    db, rules, key = keyed
    r = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["rule"]: row for row in json.loads(r.stdout)}
    assert rows["risk.classifier_confidence"]["breach"] is True
    assert rows["risk.payment_fairness"]["action"] == "escalate to model_risk"
    assert "blocked: classifier_small" in r.stderr
    assert "escalated: risk.payment_fairness (classifier_small) to role model_risk" in r.stderr
    listed = pe_inprocess("models", "blocked", "--db", db)
    assert listed.stdout.startswith("classifier_small\tblocked by risk.classifier_confidence")
    unblocked = pe("models", "unblock", "classifier_small", "--db", db, "--by", "risk", "--note", "retrained",
                   cwd=tmp_path)
    assert (unblocked.returncode, unblocked.stdout, unblocked.stderr) == (0, "unblocked: classifier_small\n", "")
    assert "is not blocked" in one_error_line(pe("models", "unblock", "classifier_small", "--db", db, cwd=tmp_path))
    assert pe_inprocess("models", "blocked", "--db", db).stdout == "no model is blocked\n"
    events = json.loads(pe_inprocess("query", "SELECT actor, key_id, payload FROM audit_log WHERE event = "
                                     "'model_unblocked'", "--db", db, "--format", "json").stdout)
    assert events == [{"actor": "risk", "key_id": key.key_id, "payload": {
        "model": "classifier_small", "rules": ["risk.classifier_confidence"], "by": "risk", "note": "retrained",
        "lifted": 1}}]
    failing = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override", "--fail-on-breach",
                 cwd=tmp_path)
    assert failing.returncode == 1
    verified = pe("audit", "verify", "--db", db, cwd=tmp_path)  # alerts and the unblock are signed and chained
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("fails", ["the record", "the lift"])
def test_an_unblock_is_signed_before_it_lifts_and_a_failure_of_either_keeps_the_block(keyed, tmp_path, monkeypatch,
                                                                                      fails):
    """Durable before acted on: a crash or full disk between the two never leaves a lift nobody signed."""
    import duckdb

    from policyengine.audit import AuditLog
    from policyengine.store.blocklist import EmbeddedBlockList

    db, rules, key = keyed
    assert pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override",
              cwd=tmp_path).returncode == 0
    assert blocked_models(db) == {"classifier_small"}

    def full_disk(*_args, **_kwargs):
        raise duckdb.IOException("IO Error: No space left on device")

    if fails == "the record":  # the log's own commit fails, through its real error path (rolled back, failed)
        commit = AuditLog._in_transaction
        monkeypatch.setattr(AuditLog, "_in_transaction", lambda log, write: commit(log, full_disk))
    else:
        monkeypatch.setattr(EmbeddedBlockList, "lift", full_disk)
    with pytest.raises(ReportError, match=r"cannot record the lift \(.*No space left on device.*\); the block stays"):
        unblock(db, "classifier_small", by="risk", note="retrained", key=tmp_path / "policyengine.key")
    monkeypatch.undo()
    assert blocked_models(db) == {"classifier_small"}
    signed = pe_inprocess("query", "SELECT count(*) AS n FROM audit_log WHERE event = 'model_unblocked'",
                          "--db", db, "--format", "json").stdout
    assert json.loads(signed) == [{"n": 0 if fails == "the record" else 1}]  # signed first, then lifted


def test_monitor_records_alerts_by_default_with_the_key_in_the_working_directory(keyed, tmp_path):
    """Issue 6: `policyengine monitor [--db FILE]` records each result as a signed alert event."""
    db, rules, key = keyed
    r = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "not recorded" not in r.stderr
    alerts = json.loads(pe_inprocess("query", "SELECT payload ->> '$.rule' AS rule, key_id FROM audit_log "
                                     "WHERE event = 'alert' ORDER BY seq", "--db", db, "--format", "json").stdout)
    assert sorted(a["rule"] for a in alerts) == sorted(results_by_rule(db, rules))
    assert {a["key_id"] for a in alerts} == {key.key_id}
    assert pe_inprocess("models", "blocked", "--db", db).stdout.startswith("classifier_small\t")


def test_monitor_without_a_key_is_one_line_and_writes_nothing(setup, tmp_path):
    db, rules = setup
    line = one_error_line(pe("monitor", "--db", db, "--rules", rules, cwd=tmp_path))
    assert line.startswith("error: policyengine.key: signing key not found; pass --key KEYFILE")
    assert "--no-record" in line
    assert "missing.pem: signing key not found; check --key" in one_error_line(
        pe_inprocess("monitor", "--db", db, "--rules", rules, "--key", tmp_path / "missing.pem"))
    printed = pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--no-record",
                 "--format", "json", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert {row["rule"] for row in json.loads(printed.stdout)} == set(results_by_rule(db, rules))
    assert "--no-record: results not recorded" in printed.stderr
    assert pe_inprocess("models", "blocked", "--db", db).stdout == "no model is blocked\n"
    assert pe_inprocess("query", "SELECT count(*) AS n FROM audit_log WHERE event = 'alert'", "--db", db,
                        "--format", "csv").stdout.split() == ["n", "0"]


def test_monitor_rules_default_to_the_shipped_rules(tmp_path):
    """Like `run` and `approve`: no --rules means the shipped rules/ folder, not a usage error."""
    from policyengine.resources import data_path

    db = write_audit_db(tmp_path / "policyengine.duckdb", story())
    r = pe("monitor", "--no-record", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shipped = load_policy([data_path("rules")]).policy_set
    assert {row["rule"] for row in json.loads(r.stdout)} == {s.id for s in (*shipped.biases, *shipped.drifts)}
    assert db.exists()


def test_models_unblock_without_a_key_lifts_nothing(setup, tmp_path):
    """A lift the signed log does not show is how a quietly re-enabled model looks: without a key, no lift."""
    db, rules = setup
    results = tuple(results_by_rule(db, rules).values())
    con = __import__("duckdb").connect(str(db))
    record(con, results, None, NOW)
    con.close()
    r = pe("models", "unblock", "classifier_small", "--db", db, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, "")
    assert one_error_line(r) == (f"error: {DEFAULT_KEY_PATH}: signing key not found; pass --key KEYFILE (made by "
                                 "`policyengine demo` or `policyengine run`); a lift is signed into the audit log "
                                 "before it takes effect, so nothing was lifted")
    assert pe_inprocess("models", "blocked", "--db", db).stdout.startswith("classifier_small\tblocked by")
    assert pe_inprocess("query", "SELECT count(*) AS n FROM audit_log WHERE event = 'model_unblocked'", "--db", db,
                        "--format", "csv").stdout.split() == ["n", "0"]


def test_an_escalation_stays_open_for_its_role_until_an_approval_for_the_rule(keyed, tmp_path):
    db, rules, _ = keyed
    assert pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T12:00:00Z", "--clock-override", cwd=tmp_path).returncode == 0
    assert pe("monitor", "--db", db, "--rules", rules, "--now", "2026-11-24T13:00:00Z", "--clock-override", cwd=tmp_path).returncode == 0
    items = json.loads(pe_inprocess("report", "open_escalations", "--db", db, "--format", "json").stdout)
    assert [(i["role"], i["rule"], i["model"], i["latest_value"], i["runs"]) for i in items] == [
        ("model_risk", "risk.payment_fairness", "classifier_small", 0.5, 2)]
    assert json.loads(pe_inprocess("report", "open_escalations", "--db", db, "--param", "role=privacy",
                                   "--format", "json").stdout) == []
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("INSERT INTO audit_log SELECT max(seq) + 1, now(), 'test', 'approval', 'ann', NULL, NULL, "
                "'{\"gate\": \"risk.payment_fairness\", \"outcome\": \"approved\", \"role\": \"model_risk\"}'"
                "::JSON, NULL, 'k1', 'leaf' FROM audit_log")
    con.close()
    assert json.loads(pe_inprocess("report", "open_escalations", "--db", db, "--format", "json").stdout) == []


def test_monitor_bad_input(setup, tmp_path):
    db, rules = setup
    assert "database file not found" in one_error_line(pe("monitor", "--db", tmp_path / "no.duckdb", "--rules", rules,
                                                          cwd=tmp_path))
    bad = tmp_path / "bad.policy"
    bad.write_text("package x\nbias b\n    for model nothing\n")
    assert "--rules:" in one_error_line(pe("monitor", "--db", db, "--rules", bad, cwd=tmp_path))


# --- the same numbers on demand: report bias|drift --model ---------------------------------------


def test_report_bias_from_the_audit_log_equals_the_monitor(setup):
    db, rules = setup
    out = json.loads(pe("report", "bias", "--db", db, "--model", "classifier_small", "--group", "subject.vendor_region",
                        "--positive", "auto_resolved", "--until", "2026-11-24T12:00:00Z", "--min-samples", "100",
                        "--format", "json").stdout)
    assert out["disparate_impact"] == results_by_rule(db, rules)["risk.payment_fairness"].value
    assert out["flagged_groups"] == ["US"]


def test_report_drift_from_the_audit_log_with_psi_over_time(setup, tmp_path):
    db, rules = setup
    args = ("report", "drift", "--db", db, "--model", "classifier_small", "--column", "output.confidence",
            "--until", "2026-11-24T12:00:00Z", "--period", "week")
    out = json.loads(pe(*args, "--format", "json").stdout)
    column = out["columns"][0]
    assert column["psi"] == results_by_rule(db, rules)["risk.classifier_confidence"].value
    assert sum(p["n_current"] for p in column["over_time"]) == 300 and len(column["over_time"]) == 6
    page = tmp_path / "drift.html"
    assert pe_inprocess(*args, "--format", "html", "-o", page).returncode == 0
    assert "PSI over time of output.confidence" in page.read_text()


def test_report_bias_from_the_audit_log_needs_group_and_positive(setup):
    db, _ = setup
    r = pe_inprocess("report", "bias", "--db", db, "--model", "classifier_small")
    assert r.returncode == 2 and "needs --group, --positive" in r.stderr
    line = one_error_line(pe_inprocess("report", "bias", "--db", db, "--model", "nope", "--group", "subject.vendor_region",
                             "--positive", "x"))
    assert "no model_call decisions of model 'nope'" in line


def test_monitor_signs_each_result_into_the_real_audit_log(tmp_path):
    """Calls written by the audit writer; the monitor's alerts appended and signed by it too."""
    audit = pytest.importorskip("policyengine.audit")
    key = audit.generate_key(tmp_path / "monitor.pem")
    db = tmp_path / "audit.duckdb"
    with audit.AuditLog(db, key) as log:
        for region, (n, selected) in GROUPS.items():
            for i in range(n):
                log.append("model_call", actor="invoice_classifier", workflow="invoice-exceptions", payload={
                    "model": "classifier_small", "provider": "local", "tokens": 10, "cost_usd": 0.0,
                    "latency_ms": 1.0, "status": "ok", "step": "classify", "subject": {"vendor_region": region},
                    "outcome": "auto_resolved" if i < selected else "manual", "output": {"confidence": 0.9}})
    rules = tmp_path / "risk.policy"
    rules.write_text(POLICY)
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    r = pe("monitor", "--db", db, "--rules", rules, "--key", tmp_path / "monitor.pem", "--now", later, "--clock-override",
           "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "not recorded" not in r.stderr
    alerts = json.loads(pe("report", "alerts", "--db", db, "--format", "json").stdout)
    assert len(alerts) == 4
    bias = next(a for a in alerts if a["kind"] == "bias")
    assert (bias["value"], bias["breach"], bias["action"], bias["escalate_to"]) == (0.5, True, "escalate", "model_risk")
    drift = [a for a in alerts if a["kind"] == "drift"]
    assert all(a["breach"] is False for a in drift)  # no baseline month yet: reported, not breached
    assert all("reference sample has no values" in a["error"] for a in drift)
    signed = json.loads(pe_inprocess("query", "SELECT DISTINCT key_id, policy_hash IS NOT NULL AS has_hash FROM audit_log "
                                    "WHERE event = 'alert'", "--db", db, "--format", "json").stdout)
    assert signed == [{"key_id": key.key_id, "has_hash": True}]


BOUNDARY_POLICY = POLICY.replace("on breach escalate to role model_risk", "on breach block")


# (case, US calls auto-resolved of 100 against EU's 80 of 100, a breach and a block)
FOUR_FIFTHS_LINE = [
    ("exactly on the line: 0.64 / 0.8 is 0.7999999999999999 in floating point", 64, False),
    ("just below it", 63, True),
    ("above it", 65, False),
]


@pytest.mark.parametrize(("us_selected", "breach"), [c[1:] for c in FOUR_FIFTHS_LINE],
                         ids=[c[0].split(":")[0] for c in FOUR_FIFTHS_LINE])
def test_a_monitor_with_on_breach_block_judges_the_four_fifths_line_as_the_reports_do(tmp_path, us_selected, breach):
    import duckdb

    rows = [(NOW - timedelta(days=3, minutes=i), "model_call", "invoice_classifier", "invoice-exceptions", "r",
             {"model": "classifier_small", "subject": {"vendor_region": region},
              "outcome": "auto_resolved" if i < selected else "manual", "output": {}}, "h")
            for region, selected in (("EU", 80), ("US", us_selected)) for i in range(100)]
    db = write_audit_db(tmp_path / "audit.duckdb", rows)
    rules = tmp_path / "risk.policy"
    rules.write_text(BOUNDARY_POLICY)
    result = results_by_rule(db, rules)["risk.payment_fairness"]
    assert result.action == "block"
    assert result.breach is breach
    con = duckdb.connect(str(db))
    assert record(con, (result,), None, NOW) == (("classifier_small",) if breach else ())
    con.close()
    assert blocked_models(db) == ({"classifier_small"} if breach else set())
    lines = ["g,y"] + [f"{g},{int(i < s)}" for g, s in (("EU", 80), ("US", us_selected)) for i in range(100)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    offline = bias_from_csv(tmp_path / "d.csv", outcome="y", positive="1", group="g", min_samples=100)
    assert ("US" in offline.flagged_groups) is breach  # the bias report draws the line at the same place
