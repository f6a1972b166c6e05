"""End to end: model versions with rollback, as separate CLI processes on one audit database in a temp dir.

The rules declare a model's versions and say who may promote it, and that one
version needs a lead's approval; the audit log is the registry. Every step runs
the real ``policyengine`` command and reads the real DuckDB file it wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_cli_workflows import PE, audit_rows, pe  # the CLI's real subprocess helpers

from policyengine.audit import generate_key
from policyengine.format import format_policy
from policyengine.syntax import parse_policy as parse

RULES = """\
package ml

role ml_engineer
role ml_lead

model classifier_small
    provider "acme"
    version "2.3.1", "2.4.0", "2.5.0"

agent scorer
    roles ml_engineer
    version "1.0", "1.1"

rule engineers_change_versions
    allow role ml_engineer to promote, rollback model "*"

rule leads_change_versions
    allow role ml_lead to promote, rollback model "*"

rule use_production
    allow any to invoke model "classifier_small"
    when resource.alias == "production"

escalate new_architecture_review
    when action == "promote" and resource.version == "2.5.0"
    to role ml_lead
    require distinct approver
"""

DIRECTORY = """\
users:
  eve: {name: Eve (ML engineer), roles: [ml_engineer]}
  lee: {name: Lee (ML lead), roles: [ml_lead]}
  max: {name: Max (no roles), roles: []}
"""

INVOKE = {"principal": {"id": "app"}, "action": "invoke", "resource": {"kind": "model", "id": "classifier_small"}}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ml.policy").write_text(RULES)
    (tmp_path / "policyengine.directory.yaml").write_text(DIRECTORY)
    generate_key(tmp_path / "policyengine.key")
    return tmp_path


def mv(work: Path, *args: str, ok: bool | None = True):
    return pe("models", *args, "--rules", "rules", cwd=work, ok=ok)


def versions(work: Path) -> dict:
    return json.loads(mv(work, "versions", "--json").stdout)


def production(work: Path) -> str:
    return versions(work)["models"]["classifier_small"]["aliases"]["production"]


def report_at(work: Path, at: datetime) -> list[dict]:
    out = pe("report", "model_versions", "--param", f"at={at.isoformat()}", "--format", "json", cwd=work)
    return json.loads(out.stdout)


def test_version_clauses_parse_format_and_round_trip():
    tree = parse(RULES, "ml.policy")
    model = next(d for d in tree.decls if getattr(d, "name", None) and d.name.value == "classifier_small")
    assert model.versions == ("2.3.1", "2.4.0", "2.5.0")
    assert parse(format_policy(tree), "ml.policy") == tree
    assert 'version "1.0", "1.1"' in format_policy(tree)


@pytest.mark.parametrize("bad", ['version "1.0", "1.0"', 'version ""'])
def test_bad_version_lists_are_refused_with_one_line(tmp_path, bad):
    (tmp_path / "m.policy").write_text(f"package p\nmodel m {bad}\n")
    out = pe("check", "m.policy", cwd=tmp_path, ok=False)
    assert "versions are distinct, non-empty strings" in out.stdout + out.stderr


def test_promote_rollback_and_the_version_in_production_at_a_time(work):
    assert production(work) == "2.3.1"  # nothing recorded yet: the first version declared

    out = mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
    assert "promoted: production of classifier_small is now 2.4.0 (was 2.3.1)" in out.stdout
    assert production(work) == "2.4.0"

    out = mv(work, "rollback", "classifier_small", "--as", "eve", "--reason", "latency regression")
    assert "rolled back: production of classifier_small is now 2.3.1 (was 2.4.0)" in out.stdout

    (first, second) = audit_rows(work / "policyengine.duckdb", "model_version")
    assert (first["change"], first["by"], first["reason"], first["previous"], first["version"]) == (
        "promote", "eve", "better recall", "2.3.1", "2.4.0")
    assert (second["change"], second["version"], second["previous"]) == ("rollback", "2.3.1", "2.4.0")
    assert second["rules"] == ["ml.engineers_change_versions"]  # the rule that allowed it

    history = versions(work)["history"]
    t1, t2 = (datetime.fromisoformat(h["ts"]) for h in history)
    assert report_at(work, t1 - timedelta(microseconds=1)) == []
    (at_t1,) = report_at(work, t1)
    assert (at_t1["version"], at_t1["changed_by"], at_t1["reason"]) == ("2.4.0", "eve", "better recall")
    (at_t2,) = report_at(work, t2)
    assert (at_t2["version"], at_t2["change"], at_t2["previous"]) == ("2.3.1", "rollback", "2.4.0")

    verified = pe("audit", "verify", cwd=work)
    assert "OK, 2 records" in verified.stdout


def test_changes_the_rules_or_the_registry_refuse_leave_no_record(work):
    refused = mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "max", "--reason", "why not", ok=False)
    assert "max may not promote classifier_small to 2.4.0: <default-deny>" in refused.stderr
    unknown = mv(work, "promote", "classifier_small", "--to", "9.9", "--as", "eve", "--reason", "r", ok=False)
    assert "version '9.9' of classifier_small is not declared (declared: 2.3.1, 2.4.0, 2.5.0)" in unknown.stderr
    same = mv(work, "promote", "classifier_small", "--to", "2.3.1", "--as", "eve", "--reason", "r", ok=False)
    assert "production of classifier_small is already version 2.3.1" in same.stderr
    undeclared = mv(work, "promote", "gpt", "--to", "1", "--as", "eve", "--reason", "r", ok=False)
    assert "'gpt' declares no versions in the rules" in undeclared.stderr
    nothing_before = mv(work, "rollback", "classifier_small", "--as", "eve", "--reason", "r", ok=False)
    assert "--to: name the version" in nothing_before.stderr
    for out in (refused, unknown, same, undeclared, nothing_before):
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert not (work / "policyengine.duckdb").exists() or audit_rows(work / "policyengine.duckdb",
                                                                     "model_version") == []


def test_a_promotion_the_rules_escalate_waits_for_a_four_eyes_approval(work):
    out = mv(work, "promote", "classifier_small", "--to", "2.5.0", "--as", "eve", "--reason", "new architecture")
    assert "waits for approval by role ml_lead" in out.stdout
    (waiting,) = versions(work)["pending"]
    rid = waiting["request_id"]
    assert production(work) == "2.3.1"  # not yet
    (requested,) = audit_rows(work / "policyengine.duckdb", "model_version_requested")
    assert (requested["gate"], requested["role"], requested["by"]) == ("ml.new_architecture_review", "ml_lead", "eve")

    again = mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "r", ok=False)
    assert f"already waits for approval ({rid})" in again.stderr
    own = mv(work, "approve", rid, "--as", "eve", ok=False)
    assert "four-eyes" in own.stderr
    no_role = mv(work, "approve", rid, "--as", "max", ok=False)
    assert "does not hold role ml_lead" in no_role.stderr
    assert production(work) == "2.3.1"

    out = mv(work, "approve", rid, "--as", "lee", "--note", "benchmarks reviewed")
    assert "approved: production of classifier_small is now 2.5.0 (was 2.3.1)" in out.stdout
    assert production(work) == "2.5.0" and versions(work)["pending"] == []
    (applied,) = audit_rows(work / "policyengine.duckdb", "model_version")
    assert (applied["by"], applied["approved_by"], applied["request_id"]) == ("eve", "lee", rid)
    twice = mv(work, "approve", rid, "--as", "lee", ok=False)
    assert f"no model version change {rid!r} waits for approval" in twice.stderr

    # a rejected request changes nothing and closes the request
    mv(work, "rollback", "classifier_small", "--to", "2.4.0", "--as", "lee", "--reason", "drift in EU")
    mv(work, "promote", "classifier_small", "--to", "2.5.0", "--as", "eve", "--reason", "retry")
    (retry,) = versions(work)["pending"]
    out = mv(work, "reject", retry["request_id"], "--as", "lee", "--note", "not before the audit")
    assert out.stdout.startswith("rejected:")
    assert production(work) == "2.4.0" and versions(work)["pending"] == []
    assert "OK, 5 records" in pe("audit", "verify", cwd=work).stdout


def test_decisions_and_their_audit_records_carry_the_version_used(work):
    mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
    (work / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in [
        INVOKE,
        {**INVOKE, "resource": {**INVOKE["resource"], "version": "2.3.1"}},  # an old version, named: no alias
        {"principal": {"id": "app"}, "action": "read", "resource": {"kind": "dataset", "id": "d"}},
    ]) + "\n")
    out = pe("eval", "--rules", "rules", "--input", "requests.jsonl", "--audit", "policyengine.duckdb",
             "--key", "policyengine.key", cwd=work)
    current, pinned, other = (json.loads(line) for line in out.stdout.splitlines())
    assert (current["effect"], current["model_version"]) == ("allow", "2.4.0")
    assert (pinned["effect"], pinned["model_version"]) == ("deny", "2.3.1")  # not production: the rule says no
    assert "model_version" not in other
    recorded = audit_rows(work / "policyengine.duckdb", "decision")
    assert [r.get("model_version") for r in recorded] == ["2.4.0", "2.3.1", None]
    assert recorded[0]["request"]["resource"]["attrs"] == {"version": "2.4.0", "alias": "production"}
    assert "OK" in pe("audit", "verify", cwd=work).stdout


def test_eval_decides_versioned_models_alike_with_and_without_audit(work):
    """Without --audit, eval takes its fast JSON Lines path; a versioned model must still be stamped with the
    version it uses (the default aliases: no log holds promotions), or rules on resource.alias and
    resource.version read nothing and the same request gets another decision."""
    lines = "\n".join(json.dumps(r) for r in [
        INVOKE, {**INVOKE, "resource": {**INVOKE["resource"], "version": "2.4.0"}},
        {"principal": {"id": "app"}, "action": "read", "resource": {"kind": "dataset", "id": "d"}},
    ]) + "\n"
    (work / "requests.jsonl").write_text(lines)
    audited = pe("eval", "--rules", "rules", "--input", "requests.jsonl", "--audit", "fresh.duckdb",
                 "--key", "policyengine.key", cwd=work).stdout.splitlines()
    from_file = pe("eval", "--rules", "rules", "--input", "requests.jsonl", cwd=work).stdout.splitlines()
    piped = subprocess.run([*PE, "eval", "--rules", "rules"], input=lines, cwd=work, capture_output=True,
                           text=True, timeout=120, check=True).stdout.splitlines()
    assert [json.loads(line)["effect"] for line in audited] == ["allow", "deny", "deny"]
    assert json.loads(audited[0])["model_version"] == "2.3.1"  # production: the first version, no promotion yet
    assert from_file == audited and piped == audited


def test_a_versioned_agent_acts_as_the_version_its_alias_names(work):
    rules = work / "rules" / "ml.policy"
    rules.write_text(RULES + '\nrule scorer_reads\n    allow agent scorer to read dataset "*"\n'
                             '    when principal.version == "1.1"\n'
                             '\nrule engineers_change_agents\n    allow role ml_engineer to promote agent "*"\n')
    agent = {"principal": {"id": "scorer", "type": "agent"}, "action": "read",
             "resource": {"kind": "dataset", "id": "scores"}}
    (work / "agent.json").write_text(json.dumps(agent))
    eval_ = ("eval", "--rules", "rules", "--input", "agent.json", "--audit", "policyengine.duckdb",
             "--key", "policyengine.key")
    before = json.loads(pe(*eval_, cwd=work).stdout)
    assert (before["effect"], before["model_version"]) == ("deny", "1.0")
    mv(work, "promote", "scorer", "--to", "1.1", "--as", "eve", "--reason", "calibrated")
    after = json.loads(pe(*eval_, cwd=work).stdout)
    assert (after["effect"], after["model_version"]) == ("allow", "1.1")
    (promoted,) = audit_rows(work / "policyengine.duckdb", "model_version")
    assert (promoted["kind"], promoted["name"], promoted["version"]) == ("agent", "scorer", "1.1")


def test_a_version_no_longer_declared_cannot_be_approved(work):
    mv(work, "promote", "classifier_small", "--to", "2.5.0", "--as", "eve", "--reason", "new architecture")
    (waiting,) = versions(work)["pending"]
    rules = work / "rules" / "ml.policy"
    rules.write_text(rules.read_text().replace('"2.5.0"', '"2.6.0"'))  # the list and the rule naming it
    out = mv(work, "approve", waiting["request_id"], "--as", "lee", ok=False)
    assert "version '2.5.0' of classifier_small is no longer declared in the rules" in out.stderr
    assert audit_rows(work / "policyengine.duckdb", "model_version") == []


def test_a_change_the_rules_deny_by_the_time_it_is_approved_is_not_applied(work):
    """The rules in force at approval decide: a freeze added while a promotion waits is not approved past."""
    before = production(work)
    mv(work, "promote", "classifier_small", "--to", "2.5.0", "--as", "eve", "--reason", "new architecture")
    (waiting,) = versions(work)["pending"]
    rules = work / "rules" / "ml.policy"
    rules.write_text(rules.read_text() + '\nrule freeze\n    deny any to promote model "*"\n')
    out = mv(work, "approve", waiting["request_id"], "--as", "lee", ok=False)
    assert "the rules now deny this change (ml.freeze: " in out.stderr and f"reject {waiting['request_id']}" in out.stderr
    assert audit_rows(work / "policyengine.duckdb", "model_version") == []
    assert production(work) == before != "2.5.0"



def test_a_change_past_its_gates_deadline_is_not_approved(work):
    """``within 1 s else deny`` on the gate: an approval after the deadline does not move the alias."""
    rules = work / "rules" / "ml.policy"
    rules.write_text(rules.read_text().replace("    require distinct approver\n",
                                               "    within 1 s else deny\n    require distinct approver\n"))
    before = production(work)
    mv(work, "promote", "classifier_small", "--to", "2.5.0", "--as", "eve", "--reason", "new architecture")
    (waiting,) = versions(work)["pending"]
    (requested,) = audit_rows(work / "policyengine.duckdb", "model_version_requested")
    deadline = datetime.fromisoformat(requested["deadline"])
    while datetime.now(deadline.tzinfo) <= deadline + timedelta(milliseconds=100):
        time.sleep(0.2)  # past the gate's deadline (no assertion on how long it took)
    out = mv(work, "approve", waiting["request_id"], "--as", "lee", ok=False)
    assert "approval deadline passed" in out.stderr and f"reject {waiting['request_id']}" in out.stderr, out.stderr
    assert audit_rows(work / "policyengine.duckdb", "model_version") == []
    assert production(work) == before != "2.5.0"
    assert mv(work, "reject", waiting["request_id"], "--as", "lee").stdout.startswith("rejected:")

# --- workflow runs: the orchestrator resolves versions as eval and serve do -------------------------

TRIAGE_VERSIONS = '    version "1.0", "1.1"\n'
TRIAGE_RULE = ('\nrule service_managers_change_triage_versions\n'
               '    allow role it_service_manager to promote, rollback model "triage_small"\n')
RUN_VERSIONS = """SELECT run_id, event, payload->>'$.model_version' AS version
FROM audit_log WHERE event IN ('decision', 'model_call') AND payload->>'$.step' = 'triage' ORDER BY seq"""


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """The shipped rules, with the ticket workflow's model declaring two versions and who may move them."""
    from policyengine.resources import data_path

    shutil.copytree(data_path("rules"), tmp_path / "rules")
    tickets = tmp_path / "rules" / "it" / "tickets.policy"
    text = tickets.read_text()
    declared = "model triage_small\n    provider \"local\" region \"eu-west-1\" hosting internal\n"
    assert declared in text
    tickets.write_text(text.replace(declared, declared + TRIAGE_VERSIONS) + TRIAGE_RULE)
    return tmp_path


def triage_versions(work: Path, run_ids: set[str]) -> list[tuple[str, str | None]]:
    """(event, model_version) of the triage step's decision and model call records of ``run_ids``."""
    out = pe("query", RUN_VERSIONS, "--format", "json", cwd=work)
    return [(r["event"], r["version"]) for r in json.loads(out.stdout) if r["run_id"] in run_ids]


def run_tickets(work: Path, *again: str) -> set[str]:
    """Run the first two sample tickets (``--again LABEL`` when they ran before: the same items are one run)."""
    out = pe("run", "it-ticket-triage", "--rules", "rules", "--limit", "2", "--json", *again, cwd=work)
    return {r["run_id"] for r in json.loads(out.stdout)["runs"]}


def test_workflow_runs_record_the_version_the_alias_names_when_they_run(shipped):
    before = run_tickets(shipped)
    assert triage_versions(shipped, before) == [("decision", "1.0"), ("model_call", "1.0")] * 2

    out = mv(shipped, "promote", "triage_small", "--to", "1.1", "--as", "frank", "--reason", "better labels")
    assert "promoted: production of triage_small is now 1.1 (was 1.0)" in out.stdout
    promoted = run_tickets(shipped, "--again", "after-promote")
    assert triage_versions(shipped, promoted) == [("decision", "1.1"), ("model_call", "1.1")] * 2
    (decision, *_) = [d for d in audit_rows(shipped / "policyengine.duckdb", "decision")
                      if d["run_id"] in promoted and d["step"] == "triage"]
    assert decision["decision"]["model_version"] == "1.1" and decision["decision"]["route"] == "triage_small"
    (run_id, *_) = sorted(promoted)
    steps = {s["step"]: s for s in json.loads(pe("runs", "show", run_id, "--json", cwd=shipped).stdout)["steps"]}
    assert steps["triage"]["output"]["model_version"] == "1.1"

    mv(shipped, "rollback", "triage_small", "--as", "frank", "--reason", "queue complaints")
    rolled_back = run_tickets(shipped, "--again", "after-rollback")
    assert triage_versions(shipped, rolled_back) == [("decision", "1.0"), ("model_call", "1.0")] * 2
    assert triage_versions(shipped, before) == [("decision", "1.0"), ("model_call", "1.0")] * 2  # history stays
    assert "OK" in pe("audit", "verify", cwd=shipped).stdout



# --- serve: a running server picks up an alias another process moved -------------------------------


def decided_version(server) -> str:
    answer = server.post("/v1/decide", INVOKE)
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


def test_a_running_server_answers_with_the_version_promoted_while_it_runs_after_sighup(work):
    import signal

    from server_process import Server, audit_records

    registry = ("--registry", "policyengine.duckdb", "--watch-interval", "0")  # the log `models promote` writes
    with Server(work, "--rules", "rules", *registry, key="policyengine.key", db="decisions.duckdb") as server:
        assert decided_version(server) == "2.3.1"
        mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
        assert decided_version(server) == "2.3.1"  # not watched: the aliases read at start until SIGHUP
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_line(r"model versions \(sighup; policyengine\.duckdb\) changed: "
                             r"promote classifier_small production 2\.3\.1 -> 2\.4\.0 by eve")
        assert decided_version(server) == "2.4.0"
        reserved = server.post("/v1/reserve", {"request": INVOKE})  # decided as /v1/decide decides it
        assert reserved.status_code == 200 and reserved.json()["decision"]["model_version"] == "2.4.0", reserved.text
        server.proc.send_signal(signal.SIGHUP)  # nothing changed since: nothing said
    assert sum("model versions" in line for line in server.lines) == 1
    decided = [p.get("model_version") for e, p in audit_records(work / "decisions.duckdb").values()
               if e == "decision"]
    assert decided == ["2.3.1", "2.3.1", "2.4.0", "2.4.0"]


def test_a_watching_server_follows_a_promotion_and_a_rollback_of_the_registry_it_reads(work):
    from server_process import Server

    with Server(work, "--rules", "rules", "--registry", "policyengine.duckdb", "--watch-interval", "0.2",
                key="policyengine.key", db="decisions.duckdb") as server:
        assert decided_version(server) == "2.3.1"
        mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
        server.wait_for_line(r"model versions \(change; .*\) changed: promote classifier_small production "
                             r"2\.3\.1 -> 2\.4\.0")
        assert decided_version(server) == "2.4.0"
        mv(work, "rollback", "classifier_small", "--as", "eve", "--reason", "latency regression")
        server.wait_for_line(r"model versions \(change; .*\) changed: rollback classifier_small production "
                             r"2\.4\.0 -> 2\.3\.1 by eve")
        assert decided_version(server) == "2.3.1"


RELOADS = [  # (how the server is told, serve options, the reason recorded)
    ("sighup", ("--watch-interval", "0"), "sighup"),
    ("file watch", ("--watch-interval", "0.2"), "change"),
]


@pytest.mark.parametrize(("how", "options", "reason"), RELOADS, ids=[r[0] for r in RELOADS])
def test_each_alias_reload_is_a_signed_audit_event_before_the_new_version_answers(work, how, options, reason):
    import signal

    from server_process import Server, audit_records, verify

    with Server(work, "--rules", "rules", "--registry", "policyengine.duckdb", *options,
                key="policyengine.key", db="decisions.duckdb") as server:
        assert decided_version(server) == "2.3.1"
        for args, version, previous in [
                (("promote", "classifier_small", "--to", "2.4.0", "--reason", "better recall"), "2.4.0", "2.3.1"),
                (("rollback", "classifier_small", "--reason", "latency regression"), "2.3.1", "2.4.0")]:
            mv(work, *args, "--as", "eve")
            if how == "sighup":
                server.proc.send_signal(signal.SIGHUP)
            server.wait_for_line(rf"model versions \({reason}; .*\) changed: {args[0]} classifier_small "
                                 rf"production {previous} -> {version}")
            assert decided_version(server) == version
        if how == "sighup":
            server.proc.send_signal(signal.SIGHUP)  # nothing changed since: nothing recorded
        assert decided_version(server) == "2.3.1"
    records = [(e, p) for _, (e, p) in sorted(audit_records(work / "decisions.duckdb").items())
               if e in ("model_versions_reloaded", "decision")]
    assert [e for e, _ in records] == ["decision", "model_versions_reloaded", "decision",
                                       "model_versions_reloaded", "decision", "decision"]
    assert [p["model_version"] for e, p in records if e == "decision"] == ["2.3.1", "2.4.0", "2.3.1", "2.3.1"]
    registry = [c["seq"] for c in versions(work)["history"]]  # the model_version records each reload read
    reloads = [p for e, p in records if e == "model_versions_reloaded"]
    assert [(p["reason"], p["registry"]) for p in reloads] == [(reason, "policyengine.duckdb")] * 2
    assert [[(c["change"], c["name"], c["alias"], c["previous"], c["version"], c["by"]) for c in p["changes"]]
            for p in reloads] == [[("promote", "classifier_small", "production", "2.3.1", "2.4.0", "eve")],
                                  [("rollback", "classifier_small", "production", "2.4.0", "2.3.1", "eve")]]
    assert [p["changes"][-1]["seq"] for p in reloads] == registry
    assert verify(work, work / "decisions.duckdb", work / "policyengine.key").returncode == 0


# (case, what recording the reload does, what reload says, the aliases in force after it)
RECORDING = [
    ("recorded", None, "changed: promote classifier_small production 2.3.1 -> 2.4.0 by eve", "2.4.0"),
    ("the log refuses", "disk full", "refused: cannot record the reload in the audit log: disk full", "2.3.1"),
]


@pytest.mark.parametrize(("refusal", "said", "in_force"), [r[1:] for r in RECORDING], ids=[r[0] for r in RECORDING])
def test_new_aliases_answer_only_once_their_reload_is_recorded(work, refusal, said, in_force):
    from policyengine.audit.errors import AuditError
    from policyengine.engine import load_policy
    from policyengine.server.policy_source import VersionSource

    source = VersionSource(work / "policyengine.duckdb", live=True)
    mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
    recorded = []

    def record(reload):
        if refusal:
            raise AuditError(refusal)
        recorded.append(reload.payload())

    source.on_change = record
    assert source.reload(reason="sighup") == said
    policy = load_policy([work / "rules"])
    _, used = source(policy, INVOKE)
    assert used == in_force
    assert recorded == ([] if refusal else [
        {"registry": str(work / "policyengine.duckdb"), "reason": "sighup",
         "changes": [c for c in versions(work)["history"]]}])


def test_a_registry_that_is_not_an_audit_database_stops_the_server_with_one_line(work):
    (work / "notes.duckdb").write_text("not a database\n")
    out = pe("serve", "--rules", "rules", "--registry", "notes.duckdb", "--db", "decisions.duckdb",
             "--key", "policyengine.key", "--port", "0", cwd=work, ok=False)
    assert out.returncode == 1 and out.stderr.startswith("error: --registry: notes.duckdb")
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_registry_another_process_holds_keeps_the_aliases_read_before_until_it_can_be_read(work):
    import signal

    import duckdb
    from server_process import Server

    with Server(work, "--rules", "rules", "--registry", "policyengine.duckdb", "--watch-interval", "0",
                key="policyengine.key", db="decisions.duckdb") as server:
        mv(work, "promote", "classifier_small", "--to", "2.4.0", "--as", "eve", "--reason", "better recall")
        writer = duckdb.connect(str(work / "policyengine.duckdb"))  # as a `models promote` in progress holds it
        try:
            server.proc.send_signal(signal.SIGHUP)
            line = server.wait_for_line(r"model versions \(sighup; policyengine\.duckdb\) refused: ")
            assert line.endswith("; still using the aliases read before"), line
            assert decided_version(server) == "2.3.1"
        finally:
            writer.close()
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_line(r"model versions \(sighup; policyengine\.duckdb\) changed: promote classifier_small")
        assert decided_version(server) == "2.4.0"


def test_check_points_at_a_rule_naming_a_version_no_model_declares(work):
    rules = work / "rules" / "ml.policy"
    rules.write_text(rules.read_text().replace('version "2.3.1", "2.4.0", "2.5.0"', 'version "2.3.1", "2.4.0"'))
    out = pe("check", "rules", cwd=work, ok=False)
    line = next(n for n, text in enumerate(rules.read_text().splitlines(), 1) if 'resource.version == "2.5.0"' in text)
    col = rules.read_text().splitlines()[line - 1].index('"2.5.0"') + 1
    assert (f"rules/ml.policy:{line}:{col}: error[unknown-version]: escalate 'new_architecture_review': "
            f'resource.version is compared with "2.5.0"') in out.stdout + out.stderr
