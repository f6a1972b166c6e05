"""``policyengine serve --shadow CANDIDATE``: a real server subprocess decides under the live rules, records
where a candidate policy would decide otherwise (``shadow_diff`` events), and never changes an answer.

Also: the server stamps the model version a request uses (``model_version``), from the aliases recorded
by ``policyengine models promote`` in the log it serves from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_process import Server, audit_records, verify

from policyengine.approval_signature import signed
from policyengine.audit import generate_key

LIVE = """\
package shop

role analyst

model classifier_small
    version "1.0", "2.0"

rule analysts_read
    allow role analyst to read dataset "*"

rule analysts_use_production
    allow role analyst to invoke model "classifier_small"
    when resource.alias == "production"
"""

# the candidate stops analysts reading the hr datasets and lets them invoke any version
CANDIDATE = LIVE.replace('to read dataset "*"', 'to read dataset "*"\n    unless resource.id like "hr/*"').replace(
    '    when resource.alias == "production"\n', "")

ANALYST = {"id": "ann", "roles": ["analyst"]}
SALES = {"principal": ANALYST, "action": "read", "resource": {"kind": "dataset", "id": "sales/2026"}}
HR = {"principal": ANALYST, "action": "read", "resource": {"kind": "dataset", "id": "hr/salaries"}}
OLD_MODEL = {"principal": ANALYST, "action": "invoke",
             "resource": {"kind": "model", "id": "classifier_small", "version": "1.0"}}
NEW_MODEL = {"principal": ANALYST, "action": "invoke",
             "resource": {"kind": "model", "id": "classifier_small", "version": "2.0"}}
PRODUCTION = {"principal": ANALYST, "action": "invoke", "resource": {"kind": "model", "id": "classifier_small"}}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name, text in (("live", LIVE), ("candidate", CANDIDATE)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shop.policy").write_text(text)
    return tmp_path


def pe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_candidate_decides_beside_the_live_policy_and_its_differences_are_recorded(work):
    with Server(work, "--rules", "live", "--shadow", "candidate", "--no-access-log") as server:
        answers = [server.post("/v1/decide", r).json() for r in (SALES, HR, HR, NEW_MODEL, PRODUCTION)]
        batch = server.post("/v1/decide/batch", [HR, SALES]).json()
        malformed = server.post("/v1/decide", {"principal": ANALYST})
    # the live answers are the live policy's: the candidate would deny HR and allow the version not in production
    assert [a["effect"] for a in answers] == ["allow", "allow", "allow", "deny", "allow"]
    assert [d["effect"] for d in batch["decisions"]] == ["allow", "allow"]
    assert malformed.status_code == 400
    # nothing promoted yet: production names the first version declared
    assert (answers[3]["model_version"], answers[4]["model_version"]) == ("2.0", "1.0")

    records = audit_records(server.db)
    decisions = {seq: p for seq, (event, p) in records.items() if event == "decision"}
    diffs = [p for event, p in records.values() if event == "shadow_diff"]
    # HR three times (two single, one in the batch) and version 2.0 once; the malformed request is not shadowed
    assert sorted((d["transition"], d["request"]["resource"]["id"]) for d in diffs) == [
        ("allow -> deny", "hr/salaries")] * 3 + [("deny -> allow", "classifier_small")]
    for d in diffs:
        live = decisions[d["live_seq"]]  # each difference points at the live decision record it shadows
        assert live["request"] == d["request"]
        assert live["decision"]["effect"] == d["live"]["effect"] != d["candidate"]["effect"]
    hr = next(d for d in diffs if d["request"]["resource"]["id"] == "hr/salaries")
    assert hr["rules"] == ["<default-deny>"] and hr["live"]["rules"] == ["shop.analysts_read"]
    assert hr["candidate"]["policy_hash"] != hr["live"]["policy_hash"]

    report = pe(work, "report", "shadow_diffs", "--db", "audit.duckdb", "--format", "json")
    assert report.returncode == 0, report.stderr
    got = {(r["transition"], r["rules"]): r["decisions"] for r in json.loads(report.stdout)}
    assert got == {("allow -> deny", "<default-deny>"): 3, ("deny -> allow", "shop.analysts_use_production"): 1}
    assert verify(work, server.db, server.key).returncode == 0


def test_without_differences_nothing_is_recorded(work):
    with Server(work, "--rules", "live", "--shadow", "live", "--no-access-log") as server:
        for request in (SALES, HR, OLD_MODEL):
            server.post("/v1/decide", request)
    events = [event for event, _ in audit_records(server.db).values()]
    assert events.count("decision") == 3 and "shadow_diff" not in events


def test_a_broken_candidate_is_refused_before_serving(work):
    (work / "broken.policy").write_text("package p\nrule r allow\n")
    generate_key(work / "a.key")
    out = pe(work, "serve", "--rules", "live", "--shadow", "broken.policy", "--port", "0", "--db", "a.duckdb",
             "--key", "a.key")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error:") and "--shadow" in out.stderr


def test_the_server_answers_with_the_version_promoted_in_its_log(work):
    (work / "policyengine.directory.yaml").write_text("users:\n  ann: {roles: [analyst]}\n")
    (work / "live" / "shop.policy").write_text(LIVE + '\nrule analysts_promote\n    allow role analyst to promote '
                                               'model "classifier_small"\n')
    Server(work, "--rules", "live", "--no-access-log").stop()  # makes the key and the log
    promoted = pe(work, "models", "promote", "classifier_small", "--to", "2.0", "--as", "ann", "--reason", "r",
                  "--rules", "live", "--db", "audit.duckdb", "--key", "audit.key")
    assert promoted.returncode == 0, promoted.stderr
    with Server(work, "--rules", "live", "--no-access-log") as server:
        current = server.post("/v1/decide", PRODUCTION).json()
        old = server.post("/v1/decide", OLD_MODEL).json()
    assert (current["effect"], current["model_version"]) == ("allow", "2.0")
    assert (old["effect"], old["model_version"]) == ("deny", "1.0")
    recorded = [p for event, p in audit_records(server.db).values() if event == "decision"]
    assert [p["model_version"] for p in recorded] == ["2.0", "1.0"]
    assert verify(work, server.db, server.key).returncode == 0


PAYMENTS = """\
package pay

role clerk
role manager
role auditor

rule clerks_pay
    allow role clerk to pay tool "erp"

escalate big_payments
    when context.amount > 1000
    to role manager
"""


def test_the_candidate_judges_approvers_by_the_servers_directory(tmp_path):
    """Live, a manager approves big payments; the candidate lets an auditor approve them. Alice is an auditor in
    the server's directory and signs an approval: live escalates, the candidate would allow. (The candidate
    decided without the directory, so alice held no role there either: no difference was recorded.)"""
    for name, text in (("live", PAYMENTS), ("candidate", PAYMENTS.replace("to role manager", "to role auditor"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pay.policy").write_text(text)
    alice = generate_key(tmp_path / "alice.key")
    pem = "".join(f"      {line}\n" for line in alice.public.pem.splitlines())
    (tmp_path / "directory.yaml").write_text(f"users:\n  alice:\n    roles: [auditor]\n    public_key: |\n{pem}")
    approval = {"gate": "pay.big_payments", "approver": "alice", "run_id": "r-1",
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    request = {"principal": {"id": "bob", "roles": ["clerk"]}, "action": "pay", "resource": {"kind": "tool", "id": "erp"},
               "context": {"amount": 5000, "run_id": "r-1"}, "approvals": [signed(approval, alice)]}
    with Server(tmp_path, "--rules", "live", "--shadow", "candidate", "--directory", "directory.yaml",
                "--no-access-log") as server:
        assert server.post("/v1/decide", request).json()["effect"] == "escalate"
    diffs = [p for event, p in audit_records(server.db).values() if event == "shadow_diff"]
    assert [(d["transition"], d["candidate"]["rules"]) for d in diffs] == [("escalate -> allow", ["pay.clerks_pay"])]
