"""``--rules`` of ``report`` and ``monitor``: a bad path or a broken rule file is one ``error:`` line
and exit 1; anything else the loader raises is a bug and is not dressed up as a rules problem."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import one_error_line, pe, pe_inprocess
from test_reports import write_audit_db

BROKEN = "package x\nrule r\n    allow bogus\n"


def _args(command: str, db: Path, rules: Path) -> list[str]:
    if command == "report":
        return ["report", "budget_spend", "--db", str(db), "--rules", str(rules)]
    return ["monitor", "--db", str(db), "--rules", str(rules), "--no-record"]


@pytest.fixture
def audit_db(tmp_path) -> Path:
    return write_audit_db(tmp_path / "audit.duckdb")


@pytest.mark.parametrize("command", ["report", "monitor"])
def test_a_missing_rules_path_is_one_line(audit_db, tmp_path, command):
    line = one_error_line(pe_inprocess(*_args(command, audit_db, tmp_path / "nowhere.policy")))
    assert line.startswith("error: --rules: ") and "nowhere.policy" in line and "no such file" in line


@pytest.mark.parametrize("command", ["report", "monitor"])
def test_a_broken_rule_file_is_one_line(audit_db, tmp_path, command):
    bad = tmp_path / "bad.policy"
    bad.write_text(BROKEN)
    line = one_error_line(pe_inprocess(*_args(command, audit_db, bad)))
    assert line.startswith("error: --rules: ") and "bad.policy:3:" in line


def test_a_broken_rule_file_in_a_real_process(audit_db, tmp_path):
    bad = tmp_path / "bad.policy"
    bad.write_text(BROKEN)
    assert "bad.policy:3:" in one_error_line(pe(*_args("report", audit_db, bad)))


def test_an_io_error_from_the_loader_is_one_line(audit_db, tmp_path, monkeypatch):
    import policyengine.engine

    def unreadable(paths, **kw):
        raise PermissionError(13, "Permission denied", str(paths[0]))

    monkeypatch.setattr(policyengine.engine, "load_policy", unreadable)
    line = one_error_line(pe_inprocess(*_args("report", audit_db, tmp_path / "r.policy")))
    assert line == f"error: --rules: {tmp_path / 'r.policy'}: cannot read rule files (Permission denied)"


def test_a_bug_in_the_loader_is_not_reported_as_a_rules_error(audit_db, tmp_path, monkeypatch):
    import policyengine.engine

    def buggy(paths, **kw):
        raise TypeError("a bug, not bad rules")

    monkeypatch.setattr(policyengine.engine, "load_policy", buggy)
    with pytest.raises(TypeError, match="a bug, not bad rules"):
        pe_inprocess(*_args("report", audit_db, tmp_path / "r.policy"))
