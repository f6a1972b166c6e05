"""End to end: `policyengine replay` re-decides a real audit log under a candidate policy.

The log is made by a real run of the marketing-campaign workflow (signed, in
DuckDB); the candidate is a copy of the shipped rules with one rule changed. The
replay must find exactly the decisions that rule governs, and leave the log as
it was.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from policyengine.resources import data_path
from tests.test_cli_workflows import pe

GATE = "marketing.personalization.large_campaign_launch"


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("replay")
    pe("run", "marketing-campaign", cwd=d)
    return d


def candidate(tmp: Path, old: str, new: str, extra: str = "") -> Path:
    """A copy of the shipped rules with ``old`` replaced by ``new`` in personalization.policy."""
    rules = tmp / "candidate"
    shutil.copytree(data_path("rules"), rules)
    policy = rules / "marketing" / "personalization.policy"
    text = policy.read_text()
    assert old in text
    policy.write_text(text.replace(old, new) + extra)
    for test in rules.rglob("*_test.yaml"):
        test.unlink()
    return rules


def recorded(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_rules_that_wrote_the_log_change_nothing(log):
    out = pe("replay", "--rules", str(data_path("rules")), "--db", "policyengine.duckdb", "--fail-on-change",
             cwd=log).stdout
    (decisions,) = recorded(log / "policyengine.duckdb", "SELECT count(*) FROM audit_log WHERE event = 'decision'")[0]
    assert f"replayed {decisions:,} recorded decisions" in out and ": 0 would change" in out


def test_a_raised_launch_threshold_changes_exactly_the_gated_launches(log, tmp_path):
    rules = candidate(tmp_path, "context.audience_size > 100_000 or context.spend_usd > 50_000",
                      "context.audience_size > 500_000 or context.spend_usd > 500_000")
    before = digest(log / "policyengine.duckdb")
    proc = pe("replay", "--rules", str(rules), "--db", "policyengine.duckdb", "--json", "--csv", str(tmp_path / "d.csv"),
              "--html", str(tmp_path / "d.html"), "--fail-on-change", cwd=log, ok=False)
    assert proc.returncode == 1  # --fail-on-change
    assert digest(log / "policyengine.duckdb") == before  # read-only: not a byte changed
    result = json.loads(proc.stdout)
    gated = recorded(log / "policyengine.duckdb",
                     "SELECT seq FROM audit_log WHERE event = 'decision' AND payload->>'$.step' = 'launch' "
                     "AND payload->>'$.decision.effect' = 'escalate' ORDER BY seq")
    assert gated  # the sample has large and costly campaigns
    assert result["changed"] == len(gated)
    assert result["by_transition"] == {"escalate -> allow": len(gated)}
    assert result["by_rule"] == {GATE: len(gated)}
    assert [c["seq"] for c in result["changes"]] == [s for (s,) in gated]
    rows = list(csv.DictReader((tmp_path / "d.csv").open()))
    assert [int(r["seq"]) for r in rows] == [s for (s,) in gated]
    assert {(r["recorded_effect"], r["replayed_effect"], r["rules"], r["step"]) for r in rows} == {
        ("escalate", "allow", GATE, "launch")}
    html = (tmp_path / "d.html").read_text().replace("<wbr>", "")  # break hints inside long ids
    assert "escalate -&gt; allow" in html and GATE in html
    assert "policyengine.duckdb" in html and "verified" in html


def test_a_new_deny_rule_is_counted_under_its_own_name(log, tmp_path):
    rules = candidate(tmp_path, "rule orchestrator_launches", "rule orchestrator_launches",
                      '\nrule no_paid_media\n    deny any to send tool "messaging/paid"\n'
                      '    because "paid media is paused"\n')
    result = json.loads(pe("replay", "--rules", str(rules), "--db", "policyengine.duckdb", "--json", cwd=log).stdout)
    paid = recorded(log / "policyengine.duckdb",
                    "SELECT count(*) FROM audit_log WHERE event = 'decision' AND payload->>'$.decision.effect' = "
                    "'allow' AND payload->>'$.request.resource.id' = 'messaging/paid'")[0][0]
    assert paid and result["by_transition"] == {"allow -> deny": paid}
    rule = "marketing.personalization.no_paid_media"
    assert result["by_rule"] == {rule: paid}
    assert all(c["resource"] == "tool messaging/paid" and rule in c["replayed_rules"] for c in result["changes"])


def test_since_and_until_select_the_period(log, tmp_path):
    rules = candidate(tmp_path, "> 100_000", "> 900_000")
    later = pe("replay", "--rules", str(rules), "--since", "2999-01-01T00:00:00Z", "--json", cwd=log).stdout
    assert json.loads(later)["replayed"] == 0
    earlier = pe("replay", "--rules", str(rules), "--until", "2000-01-01", "--json", cwd=log).stdout
    assert json.loads(earlier)["replayed"] == 0


def test_a_ci_gate_that_replays_nothing_fails(log, tmp_path):
    """``--fail-on-change`` over a period with no decision (a typo in --since) exited 0: nothing changed."""
    proc = pe("replay", "--rules", str(data_path("rules")), "--since", "2999-01-01T00:00:00Z", "--fail-on-change",
              cwd=log, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("error: --fail-on-change: policyengine.duckdb holds no decision "
                                                    "record in the period; nothing was replayed")


@pytest.mark.parametrize("args, message", [
    (["--rules", "RULES", "--db", "missing.duckdb"], "error: missing.duckdb: database file not found"),
    (["--rules", "broken.policy", "--db", "policyengine.duckdb"], "error: --rules: "),
    (["--rules", "RULES", "--since", "yesterday"], "is not an ISO 8601 time"),
])
def test_bad_input_is_one_line(log, args, message):
    (log / "broken.policy").write_text("package x\nrule r allow\n")
    args = [str(data_path("rules")) if a == "RULES" else a for a in args]
    proc = pe("replay", *args, cwd=log, ok=False)
    assert message in proc.stderr


def test_grouping_equal_requests_gives_what_deciding_each_record_alone_gives(log, tmp_path):
    raised = ("context.audience_size > 100_000 or context.spend_usd > 50_000",
              "context.audience_size > 500_000 or context.spend_usd > 500_000")
    grouped = candidate(tmp_path / "a", *raised)
    # a rule that reads context.run_id and context.step: replay can no longer group requests by them
    alone = candidate(tmp_path / "b", *raised, '\nrule reads_run_fields\n    deny any to frobnicate tool "x"\n'
                                               '    when context.run_id == "none" and context.step == "none"\n')
    a = json.loads(pe("replay", "--rules", str(grouped), "--json", cwd=log).stdout)
    b = json.loads(pe("replay", "--rules", str(alone), "--json", cwd=log).stdout)
    assert a["changed"] > 0 and a["replayed"] == b["replayed"]
    keep = ("seq", "run_id", "step", "recorded_effect", "replayed_effect", "rules")
    assert [{k: c[k] for k in keep} for c in a["changes"]] == [{k: c[k] for k in keep} for c in b["changes"]]


AGE_RULE = '\nrule no_stale_documents\n    deny any to read dataset "docs/*"\n    when age of data.published_at > 30d\n'


def test_a_request_sent_again_later_is_decided_at_its_own_time(tmp_path):
    """One request recorded twice, 60 days apart, under a candidate that reads the clock (``age of``): the later
    record would change, the earlier not. (They were one group, decided once at the earlier time: "0 would
    change".)"""
    recorded_rules = 'package docs\nrole reader\nrule readers_read\n    allow role reader to read dataset "docs/*"\n'
    (tmp_path / "recorded.policy").write_text(recorded_rules)
    (tmp_path / "candidate.policy").write_text(recorded_rules + AGE_RULE)
    (tmp_path / "request.json").write_text(json.dumps({
        "principal": {"id": "ana", "roles": ["reader"]}, "action": "read",
        "resource": {"kind": "dataset", "id": "docs/handbook"}, "data": {"published_at": "2026-01-01T00:00:00Z"}}))
    pe("keys", "generate", cwd=tmp_path)
    for _ in range(2):
        pe("eval", "--rules", "recorded.policy", "--input", "request.json", "--audit", "policyengine.duckdb",
           "--key", "policyengine.key", cwd=tmp_path)
    with duckdb.connect(str(tmp_path / "policyengine.duckdb")) as conn:  # as if recorded on these days
        first, later = [s for (s,) in conn.execute(
            "SELECT seq FROM audit_log WHERE event = 'decision' ORDER BY seq").fetchall()]
        conn.execute("UPDATE audit_log SET ts = ? WHERE seq = ?", ["2026-01-10T00:00:00Z", first])
        conn.execute("UPDATE audit_log SET ts = ? WHERE seq = ?", ["2026-03-10T00:00:00Z", later])
    result = json.loads(pe("replay", "--rules", "candidate.policy", "--json", cwd=tmp_path).stdout)
    assert result["replayed"] == 2
    assert [(c["seq"], c["recorded_effect"], c["replayed_effect"]) for c in result["changes"]] == [
        (later, "allow", "deny")]
