"""``policyengine query`` cannot be used to change settings, load code or exhaust the machine.

Each wrapper of a non-read statement inside EXPLAIN [ANALYZE] is refused by name
and quotes what was typed; a runaway statement is stopped by --timeout; memory
and row limits hold. Real DuckDB audit databases, the real CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_reporting import one_error_line, pe_inprocess, run, write_audit_db


@pytest.fixture
def audit_db(tmp_path) -> Path:
    return write_audit_db(tmp_path / "audit.duckdb")

WRAPPED = [
    ("EXPLAIN ANALYZE SET memory_limit='1TB'", "SET"),
    ("EXPLAIN ANALYZE LOAD httpfs", "LOAD"),
    ("EXPLAIN ANALYZE CALL pragma_version()", "CALL"),
    ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", "CREATE"),
    ("EXPLAIN ANALYZE CHECKPOINT", "CALL"),  # DuckDB parses CHECKPOINT as a CALL
    ("EXPLAIN ANALYZE VACUUM", "VACUUM"),
    ("explain analyse  /* hidden */ SET threads = 64", "SET"),
    ("EXPLAIN SET memory_limit='1TB'", "SET"),
    ("EXPLAIN ANALYZE DELETE FROM audit_log", "DELETE"),
]


@pytest.mark.parametrize(("statement", "inner"), WRAPPED)
def test_explain_is_judged_by_the_statement_it_wraps(audit_db, statement, inner):
    before = audit_db.read_bytes()
    line = one_error_line(pe_inprocess("query", statement, "--db", audit_db))
    assert f"refused, EXPLAIN wrapping {inner} is not a read statement" in line
    assert repr(" ".join(statement.split())) in line  # the refusal quotes what was typed
    assert audit_db.read_bytes() == before


@pytest.mark.parametrize("statement", ["EXPLAIN SELECT count(*) FROM audit_log",
                                       "EXPLAIN ANALYZE SELECT count(*) FROM audit_log"])
def test_explain_of_a_read_still_works(audit_db, statement):
    assert "plan" in run("query", statement, "--db", audit_db, "--format", "json").lower()


def test_a_runaway_statement_is_stopped_by_the_timeout(audit_db):
    cross = "SELECT sum(a.range * b.range) FROM range(100000000) a, range(100000000) b"
    line = one_error_line(pe_inprocess("query", cross, "--db", audit_db, "--timeout", "0.5"))
    assert "stopped after 0.5 s (--timeout)" in line and "range(100000000)" in line


def test_the_memory_limit_applies_and_cannot_be_raised_from_sql(audit_db):
    out = run("query", "SELECT current_setting('memory_limit') AS m", "--db", audit_db, "--memory-limit", "256MB",
              "--format", "json")
    assert "256" in out or "244" in out  # DuckDB shows the limit in MiB
    default = run("query", "SELECT current_setting('memory_limit') AS m", "--db", audit_db, "--format", "json")
    assert "GiB" in default or "GB" in default or "953" in default


@pytest.mark.parametrize(("args", "message"), [
    (["--memory-limit", "lots"], "--memory-limit 'lots' is not a size"),
    (["--memory-limit", "1GB'; SET threads=1; --"], "is not a size"),
    (["--timeout", "0"], "Invalid value for '--timeout'"),
    (["--max-rows", "2"], "more than 2 rows; add a LIMIT"),
])
def test_limit_options_are_checked(audit_db, args, message):
    r = pe_inprocess("query", "SELECT * FROM range(10)", "--db", audit_db, *args)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
