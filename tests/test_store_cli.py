"""``--state``: the CLI reads and charges budgets in the store it names (real PostgreSQL, real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policyengine.budgets import window_bounds

POLICY = """
package shop
role manager
model small
    region "eu-west-1" hosting internal
rule managers_invoke
    allow role manager to invoke model "*"
budget daily
    for model small
    limit 1000 tokens per day
    on exceed deny
"""
NOW = "2026-11-24T12:00:00Z"
INVOKE = {"principal": {"id": "pat", "roles": ["manager"]}, "action": "invoke",
          "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 200}}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "policyengine"]
    return subprocess.run([*cmd, *args], input=json.dumps(INVOKE), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, timeout=120)


def effect(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[0])["effect"]


@pytest.mark.postgres
def test_eval_reads_budget_usage_from_postgres(postgres_url, tmp_path):
    from policyengine.store import open_store

    (tmp_path / "shop.policy").write_text(POLICY)
    args = ("eval", "--rules", "shop.policy", "--now", NOW)
    assert effect(cli(*args, "--state", postgres_url, cwd=tmp_path)) == "allow"
    with open_store(postgres_url) as store:  # another worker spent 900 of the day's 1000
        store.ledger.charge("model:small", "tokens", 900, datetime(2026, 11, 24, 8, tzinfo=UTC))
    assert effect(cli(*args, "--state", postgres_url, cwd=tmp_path)) == "deny"
    assert effect(cli(*args, cwd=tmp_path, env={"POLICYENGINE_STATE": postgres_url})) == "deny"
    assert effect(cli(*args, cwd=tmp_path)) == "allow"  # without --state: a fresh in-memory ledger


@pytest.mark.parametrize(("state", "message"), [
    ("mysql://db/x", "unknown kind of state"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot connect to PostgreSQL"),
])
def test_eval_state_that_cannot_be_opened_is_one_line(tmp_path, state, message):
    (tmp_path / "shop.policy").write_text(POLICY)
    result = cli("eval", "--rules", "shop.policy", "--state", state, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


EMPTY_STATE = "error: --state (POLICYENGINE_STATE) is empty; give the URL or unset it for the default"


@pytest.mark.parametrize("command", [("eval", "--rules", "shop.policy", "--now", NOW), ("runs", "list"),
                                     ("models", "blocked"), ("monitor", "--rules", "shop.policy")])
@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_empty_state_is_refused_not_read_as_this_process_alone(tmp_path, command, how):
    """POLICYENGINE_STATE=$URL with URL unset, or --state '': read as unset, a command fell back to state of its
    own (eval decided on a fresh in-memory ledger, 'allow' for a budget other workers had spent)."""
    (tmp_path / "shop.policy").write_text(POLICY)
    given = {"env": {"POLICYENGINE_STATE": ""}} if how == "env" else {}
    flag = ("--state", " ") if how == "flag" else ()
    result = cli(*command, *flag, cwd=tmp_path, **given)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (1, EMPTY_STATE, "")


@pytest.mark.postgres
@pytest.mark.slow
def test_two_run_processes_with_their_own_db_charge_one_postgres_ledger(postgres_url, tmp_path):
    from policyengine.store import open_store

    tokens = 0
    for name, again in (("a", []), ("b", ["--again", "second process"])):  # the same items: run anew on purpose
        result = subprocess.run(
            [*([shutil.which("policyengine", path=str(Path(sys.executable).parent))] or []), "run",
             "invoice-exceptions", "--limit", "4", "--json", "--db", f"{name}.duckdb", "--key", f"{name}.key",
             "--state", postgres_url, *again],
            capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        tokens += json.loads(result.stdout)["tokens"]
    assert tokens > 0
    with open_store(postgres_url) as store:
        month = window_bounds("month", datetime.now(UTC))
        assert store.ledger.usage("workflow:invoice-exceptions", "tokens", *month) == tokens
