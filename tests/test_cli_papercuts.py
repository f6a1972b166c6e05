"""Small things a new user hit after the demo: each command says what to do next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policyengine.audit import AuditLog, generate_key

PE = [sys.executable, "-m", "policyengine"]


def pe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*PE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _log_with_a_model_call(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "policyengine.duckdb", generate_key(tmp_path / "policyengine.key")) as log:
        log.append("model_call", actor="bot", workflow="w", run_id="r-1",
                   payload={"model": "small", "tokens": 10, "cost_usd": 0.0, "status": "ok",
                            "output": {"confidence": 0.9}, "outcome": "auto_resolved", "subject": {}})


def test_keys_rotate_says_the_new_key_must_be_passed_from_now_on(tmp_path):
    _log_with_a_model_call(tmp_path)
    assert pe("keys", "generate", "--out", "next.key", cwd=tmp_path).returncode == 0
    rotated = pe("keys", "rotate", "--new-key", "next.key", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert ("from now on the log is signed with next.key: pass --key next.key to every command that writes to "
            "policyengine.duckdb (policyengine.key is refused)") in rotated.stderr


def test_report_drift_on_a_log_with_one_period_of_calls_says_why_and_what_to_do(tmp_path):
    _log_with_a_model_call(tmp_path)
    result = pe("report", "drift", "--db", "policyengine.duckdb", "--model", "small", "--column",
                "output.confidence", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: column 'output.confidence': the reference sample has no values: no model_call "
                           "of 'small' between ")
    assert "drift needs calls in two periods" in line and "--baseline-days" in line


def test_query_prints_its_title_whole_above_a_narrow_table(tmp_path):
    _log_with_a_model_call(tmp_path)
    result = pe("query", "SELECT 1 AS x", "--db", "policyengine.duckdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Ad-hoc query"
