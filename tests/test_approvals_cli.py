"""End to end: approvals that cannot be bypassed, as separate CLI processes on one database.

Each test starts a real run that waits for a senior analyst, then tries what an
attacker would: bring a friendlier user directory, a changed policy, an old clock.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from test_cli_workflows import INVOICE, SURE, audit_rows, pe  # the workflow CLI's real helpers

from policyengine.resources import data_path


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[Path, str]:
    """A work dir whose database holds one invoice run waiting for a senior analyst."""
    (tmp_path / "invoice.json").write_text(json.dumps([INVOICE]))
    (tmp_path / "sure.yaml").write_text(SURE)
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--json",
             cwd=tmp_path)
    (run,) = json.loads(out.stdout)["runs"]
    assert run["status"] == "waiting_approval"
    return tmp_path, run["run_id"]


MALLORY = "\n  mallory:\n    name: Mallory\n    roles: [senior_analyst]\n"


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_an_approver_cannot_bring_their_own_directory(waiting, command):
    work, run_id = waiting
    (work / "mine.yaml").write_text("users:" + MALLORY)
    refused = pe(command, run_id, "--as", "mallory", "--directory", "mine.yaml", cwd=work, ok=False)
    assert refused.returncode == 1
    assert "--directory mine.yaml: the user directory is the deployment's" in refused.stderr
    assert audit_rows(work / "policyengine.duckdb", "approval") == []


def test_the_directory_beside_the_database_is_used_and_each_change_is_audited(waiting):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    shipped = data_path("data") / "directory.yaml"
    (first,) = audit_rows(db, "directory_changed")
    assert first["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest() and first["previous_sha256"] is None
    refused = pe("approve", run_id, "--as", "mallory", cwd=work, ok=False)
    assert "unknown user 'mallory'" in refused.stderr
    assert len(audit_rows(db, "directory_changed")) == 1  # unchanged directory: no new record

    deployed = work / "policyengine.directory.yaml"
    shutil.copyfile(shipped, deployed)
    deployed.write_text(deployed.read_text() + MALLORY)
    pe("approve", run_id, "--as", "mallory", cwd=work)
    changes = audit_rows(db, "directory_changed")
    new_hash = hashlib.sha256(deployed.read_bytes()).hexdigest()
    assert [(c["sha256"], c["previous_sha256"]) for c in changes] == [
        (first["sha256"], None), (new_hash, first["sha256"])]
    assert changes[1]["source"] == str(deployed.name) or changes[1]["source"].endswith(deployed.name)
    (approval,) = audit_rows(db, "approval")
    assert approval["approver"] == "mallory" and approval["directory_sha256"] == new_hash


def _changed_rules(work: Path) -> Path:
    """The shipped rules with one more role: a different policy hash."""
    rules = work / "rules"
    shutil.copytree(data_path("rules"), rules)
    first = sorted(rules.rglob("*.policy"))[0]
    first.write_text(first.read_text() + "\nrole late_addition\n")
    return rules


def test_a_run_is_decided_under_the_policy_it_was_started_with(waiting):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    rules = _changed_rules(work)
    refused = pe("approve", run_id, "--as", "alice", "--rules", str(rules), cwd=work, ok=False)
    assert refused.returncode == 1 and f"run {run_id} was started under policy" in refused.stderr
    assert "--migrate-policy" in refused.stderr
    assert audit_rows(db, "approval") == []
    # nobody may migrate until the deployment's directory names the roles that may
    refused = pe("approve", run_id, "--as", "alice", "--rules", str(rules), "--migrate-policy", cwd=work, ok=False)
    assert "roles allowed to migrate a run's policy: none" in refused.stderr
    deployed = work / "policyengine.directory.yaml"
    deployed.write_text((data_path("data") / "directory.yaml").read_text()
                        + "migrate_policy_roles: [senior_analyst]\n")
    refused = pe("approve", run_id, "--as", "bob", "--rules", str(rules), "--migrate-policy", cwd=work, ok=False)
    assert "does not hold role senior_analyst" in refused.stderr  # the gate's role is still needed
    pe("approve", run_id, "--as", "alice", "--rules", str(rules), "--migrate-policy", cwd=work)
    (migrated,) = audit_rows(db, "policy_migrated")
    with __import__("duckdb").connect(str(db), read_only=True) as conn:
        started = conn.execute("SELECT policy_hash FROM audit_log WHERE event = 'policy_loaded' ORDER BY seq "
                               "LIMIT 1").fetchone()[0]
    assert migrated["from"] == started and migrated["to"] != started and migrated["by"] == "alice"
    assert migrated["run_id"] == run_id


def test_the_same_rules_need_no_migration(waiting):
    work, run_id = waiting
    assert "approved by alice" in pe("approve", run_id, "--as", "alice", cwd=work).stdout
    assert audit_rows(work / "policyengine.duckdb", "policy_migrated") == []


REQUEST = {"principal": {"id": "carol", "roles": ["analyst"]}, "action": "read",
           "resource": {"kind": "dataset", "id": "finance/invoices"}}
WRITING_WITH_NOW = {
    "approve": ["approve", "{run}", "--as", "alice"],
    "reject": ["reject", "{run}", "--as", "alice"],
    "runs expire": ["runs", "expire"],
    "eval --audit": ["eval", "--rules", str(data_path("rules")), "--input", "request.json",
                     "--audit", "policyengine.duckdb", "--key", "policyengine.key"],
    "monitor": ["monitor"],
}


@pytest.mark.parametrize("name", WRITING_WITH_NOW)
def test_now_is_refused_on_writing_commands_without_a_recorded_clock_override(waiting, name):
    work, run_id = waiting
    (work / "request.json").write_text(json.dumps(REQUEST))
    db = work / "policyengine.duckdb"
    args = [a.replace("{run}", run_id) for a in WRITING_WITH_NOW[name]]
    refused = pe(*args, "--now", "2020-01-01T00:00:00Z", cwd=work, ok=False)
    assert refused.returncode == 1
    assert f"{name} --now 2020-01-01T00:00:00Z: --now is for read-only views" in refused.stderr
    assert audit_rows(db, "approval") == [] and audit_rows(db, "clock_override") == []
    pe(*args, "--now", "2020-01-01T00:00:00Z", "--clock-override", cwd=work, ok=None)
    (override,) = audit_rows(db, "clock_override")
    assert override["now"] == "2020-01-01T00:00:00+00:00" and override["command"] == name.split(" --")[0]
    assert override["offset_seconds"] < -365 * 86400


@pytest.mark.parametrize("view", [["runs", "list"], ["runs", "show", "{run}"], ["monitor", "--no-record"]])
def test_read_only_commands_take_now_without_an_override(waiting, view):
    work, run_id = waiting
    pe(*[a.replace("{run}", run_id) for a in view], "--now", "2020-01-01T00:00:00Z", cwd=work)
    assert audit_rows(work / "policyengine.duckdb", "clock_override") == []


def _recorded_policy(db: Path, run_id: str) -> str:
    with __import__("duckdb").connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT policy_hash FROM orch_runs WHERE run_id = ?", [run_id]).fetchone()[0]


LATE = ("--now", "2099-01-01T00:00:00Z", "--clock-override")  # past every approval deadline


@pytest.mark.parametrize("command, extra, refusal", [
    (("runs", "resume", "{run}"), (), "resume it with the rules it was started with"),
    (("runs", "resume"), (), None),  # recover: a waiting run is not interrupted, nothing to resume
    (("runs", "expire", *LATE), (), "expire it with the rules it was started with"),
    (("runs", "resume", "{run}"), ("--migrate-policy",), "--migrate-policy needs the user who migrates"),
    (("runs", "expire", *LATE), ("--migrate-policy",), "--migrate-policy needs the user who migrates"),
    (("runs", "resume", "{run}"), ("--migrate-policy", "--as", "bob"), "roles allowed to migrate a run's policy"),
    (("runs", "expire", *LATE), ("--migrate-policy", "--as", "bob"), "roles allowed to migrate a run's policy"),
])
def test_resume_and_expire_keep_the_policy_a_run_was_started_with(waiting, command, extra, refusal):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    started = _recorded_policy(db, run_id)
    rules = _changed_rules(work)
    args = [a.format(run=run_id) for a in command]
    proc = pe(*args, "--rules", str(rules), *extra, cwd=work, ok=None)
    if refusal is not None:
        assert proc.returncode == 1 and refusal in proc.stderr, proc.stderr
    assert _recorded_policy(db, run_id) == started
    assert audit_rows(db, "policy_migrated") == []
    assert audit_rows(db, "approval") == []


@pytest.mark.parametrize("command, status", [
    (("runs", "resume", "{run}"), "waiting_approval"),
    (("runs", "expire", *LATE), None),
])
def test_resume_and_expire_migrate_only_when_asked_by_an_allowed_role(waiting, command, status):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    started = _recorded_policy(db, run_id)
    rules = _changed_rules(work)
    (work / "policyengine.directory.yaml").write_text((data_path("data") / "directory.yaml").read_text()
                                                      + "migrate_policy_roles: [senior_analyst]\n")
    args = [a.format(run=run_id) for a in command]
    pe(*args, "--rules", str(rules), "--migrate-policy", "--as", "alice", cwd=work)
    (migrated,) = audit_rows(db, "policy_migrated")
    assert migrated["from"] == started and migrated["to"] != started and migrated["by"] == "alice"
    assert migrated["run_id"] == run_id and migrated["command"] == command[1]
    assert _recorded_policy(db, run_id) == migrated["to"]
    if status is None:
        (expired,) = audit_rows(db, "approval")
        assert expired["outcome"] == "expired"


def test_an_overdue_run_under_other_rules_is_neither_expired_on_the_way_nor_approvable(waiting):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    started = _recorded_policy(db, run_id)
    rules = _changed_rules(work)
    (work / "policyengine.directory.yaml").write_text((data_path("data") / "directory.yaml").read_text()
                                                      + "migrate_policy_roles: [senior_analyst]\n")
    refused = pe("approve", run_id, "--as", "alice", "--rules", str(rules), "--migrate-policy", *LATE, cwd=work,
                 ok=False)
    assert "its approval deadline passed" in refused.stderr
    assert _recorded_policy(db, run_id) == started and audit_rows(db, "approval") == []


# An approver reaches the database through a folder of their own (evil/), where they put a user directory that
# makes them a payments controller and a masking config that drops the approval's note. What sits beside the
# database is trusted, so it is looked for beside the database's real file; a hard link (which cannot be told
# from the original) is refused. (case, how evil/policyengine.duckdb reaches the database, user, exit, says)
LINKED_DB = [
    ("the database's own path", None, "alice", 0, "approved by alice"),
    ("a symlink: the directory beside the link is not in force", "symlink", "bob", 1, "does not hold"),
    ("a symlink: the real directory still lets its approver approve", "symlink", "alice", 0, "approved by alice"),
    ("a hard link: refused", "hardlink", "bob", 1, "the database file has 2 hard links"),
    ("a hard link: refused for a real approver too", "hardlink", "alice", 1, "the database file has 2 hard links"),
]

BOB_IN_CHARGE = "users:\n  bob: {name: Bob, roles: [senior_analyst, payments_controller]}\n"


@pytest.mark.parametrize(("case", "link", "user", "code", "says"), LINKED_DB, ids=[c[0] for c in LINKED_DB])
def test_a_link_to_the_database_does_not_choose_its_directory_or_mask(waiting, case, link, user, code, says):
    work, run_id = waiting
    db = work / "policyengine.duckdb"
    evil = work / "evil"
    evil.mkdir()
    (evil / "policyengine.directory.yaml").write_text(BOB_IN_CHARGE)
    (evil / "policyengine.mask.yaml").write_text("drop:\n  - /note\n")
    given = "policyengine.duckdb"
    if link == "symlink":
        (evil / "policyengine.duckdb").symlink_to("../policyengine.duckdb")
        given = "evil/policyengine.duckdb"
    elif link == "hardlink":
        (evil / "policyengine.duckdb").hardlink_to(db)
        given = "evil/policyengine.duckdb"
    done = pe("approve", run_id, "--as", user, "--db", given, "--key", "policyengine.key", "--note", "looked at it",
              cwd=work, ok=None)
    assert (done.returncode, says in done.stdout + done.stderr) == (code, True), done.stderr
    if code:
        assert len(done.stderr.strip().splitlines()) == 1  # one clear line
        if link == "hardlink":
            (evil / "policyengine.duckdb").unlink()
        assert audit_rows(db, "approval") == []
        return
    (approval,) = audit_rows(db, "approval")
    assert (approval["approver"], approval["note"]) == (user, "looked at it")  # evil/'s mask dropped nothing
    shipped = hashlib.sha256((data_path("data") / "directory.yaml").read_bytes()).hexdigest()
    assert approval["directory_sha256"] == shipped
