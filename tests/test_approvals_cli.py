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
