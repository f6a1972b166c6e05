"""``policyengine gateway`` refusing rules that fail to check at start: a signed ``policy_refused`` record, as
``serve`` writes, then exit 1 with the error; a log that cannot take it leaves the start refused all the same,
and the error says the refusal was not recorded.

The gateway checks its rules before it opens anything else, so it opens its log for that one record; each test
starts the real gateway as a subprocess and reads what it left once it exited.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import pytest
import yaml
from gateway_process import gateway_refused
from server_process import audit_records, verify

from policyengine.audit import generate_key

# would let every caller invoke every model, but does not parse
BROKEN = """package gw.start
role caller
rule everyone_invokes
    allow allow role caller to invoke model "*"
"""
SYNTAX = "error[syntax]: expected who the rule applies to"


def _setup(cwd: Path, *, db: str = "gw.duckdb") -> Path:
    """A gateway.yaml whose rules have a syntax error; the signing key is left for the gateway to create."""
    (cwd / "gw.policy").write_text(BROKEN, encoding="utf-8")
    keys = [{"sha256": hashlib.sha256(b"sk-caller").hexdigest(), "principal": {"id": "bob", "roles": ["caller"]}}]
    (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
    config = cwd / "gateway.yaml"
    config.write_text(yaml.safe_dump({"rules": ["gw.policy"], "keys": "keys.yaml", "db": db, "key": "gw.key"}),
                      encoding="utf-8")
    return config


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_rules_with_a_syntax_error_at_start_are_recorded_as_policy_refused_then_the_gateway_exits_1(
        tmp_path: Path) -> None:
    result = gateway_refused(tmp_path, _setup(tmp_path))
    assert _errors(result) == ["error: the rules have errors:"]  # the one error line, the findings under it
    assert SYNTAX in result.stderr and "not recorded" not in result.stderr
    checked = verify(tmp_path, tmp_path / "gw.duckdb", tmp_path / "gw.key")  # the key it created at this start
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ((event, payload),) = audit_records(tmp_path / "gw.duckdb").values()
    assert event == "policy_refused"
    finding = next(line for line in result.stderr.splitlines() if SYNTAX in line)
    assert payload == {"source": "rules", "bundle": None, "bundle_sha256": None, "signer": None,
                       "reason": "startup", "refusal": f"rule errors: {finding}", "active": None}
    assert finding.startswith(f"{tmp_path / 'gw.policy'}:4:")  # the refusal names the file and the error
    con = duckdb.connect(str(tmp_path / "gw.duckdb"), read_only=True)
    try:  # nothing was serving: the record names no active policy
        assert con.execute("SELECT policy_hash FROM audit_log").fetchall() == [(None,)]
    finally:
        con.close()


def test_the_refusal_at_start_has_the_payload_serve_records_for_the_same_rules(tmp_path: Path) -> None:
    gateway_refused(tmp_path, _setup(tmp_path))
    served = subprocess.run([sys.executable, "-m", "policyengine", "serve", "--rules", str(tmp_path / "gw.policy"),
                             "--db", "serve.duckdb", "--key", "gw.key", "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert served.returncode == 1, served.stderr
    assert [p for _, p in audit_records(tmp_path / "gw.duckdb").values()] == \
        [p for _, p in audit_records(tmp_path / "serve.duckdb").values()]


@contextmanager
def _no_folder(cwd: Path) -> Iterator[None]:
    yield  # the log is gw.duckdb in a folder that does not exist


@contextmanager
def _not_a_database(cwd: Path) -> Iterator[None]:
    (cwd / "gw.duckdb").write_text("not a database\n", encoding="utf-8")
    yield


@contextmanager
def _held_by_another_process(cwd: Path) -> Iterator[None]:
    """This process holds the audit database open for writing while the gateway starts."""
    generate_key(cwd / "gw.key")
    con = duckdb.connect(str(cwd / "gw.duckdb"))
    try:
        yield
    finally:
        con.close()


@contextmanager
def _key_not_readable(cwd: Path) -> Iterator[None]:
    (cwd / "gw.key").write_text("not a key\n", encoding="utf-8")
    (cwd / "gw.key").chmod(0o600)
    yield


UNOPENABLE: list[tuple[str, str, Callable[[Path], AbstractContextManager[None]], str]] = [
    ("no such folder", "missing/gw.duckdb", _no_folder, "missing/gw.duckdb: cannot open audit database"),
    ("not a database", "gw.duckdb", _not_a_database, "gw.duckdb: not a DuckDB database file"),
    ("in use by another process", "gw.duckdb", _held_by_another_process,
     "gw.duckdb: audit database is in use by another process"),
    ("key not readable", "gw.duckdb", _key_not_readable, "gw.key: not an unencrypted PEM private key"),
]


@pytest.mark.parametrize(("case", "db", "while_", "says"), UNOPENABLE, ids=[u[0] for u in UNOPENABLE])
def test_a_log_that_cannot_be_opened_still_refuses_the_start_and_says_the_refusal_was_not_recorded(
        tmp_path: Path, case: str, db: str, while_: Callable[[Path], AbstractContextManager[None]],
        says: str) -> None:
    config = _setup(tmp_path, db=db)
    with while_(tmp_path):
        result = gateway_refused(tmp_path, config)
    assert _errors(result) == ["error: the rules have errors:"]
    (line,) = [line for line in result.stderr.splitlines() if SYNTAX in line]
    assert line.endswith(")") and f"(not recorded in the audit log: AuditError: {says}" in line, line
