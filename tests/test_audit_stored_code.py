"""A changed audit file never verifies by changing what its readers run or read.

DuckDB files can store views, macros and generated columns, and a macro stored
in the file replaces a built-in function (``timezone``) or a catalog function
(``duckdb_tables``) once the file is the reader's default catalog. Each row
below is a change that `audit verify` once passed while `query` and the
reports showed something else; each is now refused with one line naming what
was found, on the database, on a folder of segments, and for the readers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import AuditError, AuditLog, SigningKey, generate_key, verify_database
from policyengine.audit.export import export_jsonl, verify_export
from policyengine.audit.keys import public_key_path
from policyengine.audit.segments import RollPolicy, SegmentedLog, verify_segments
from policyengine.reporting.errors import ReportError
from policyengine.reporting.query import run_query

STORED_CODE = [
    ("a view answers for audit_log",
     "ALTER TABLE audit_log RENAME TO signed; "
     "CREATE VIEW audit_log AS SELECT * REPLACE ('{\"forged\":true}'::JSON AS payload) FROM signed",
     "view audit_log"),
    ("a macro replaces timezone()",
     "UPDATE audit_log SET ts = ts - INTERVAL 365 DAY WHERE seq = 4; "
     "CREATE MACRO timezone(z, t) AS t + INTERVAL 365 DAY",
     "macro timezone"),
    ("a table macro replaces duckdb_tables()",
     "CREATE MACRO duckdb_tables() AS TABLE SELECT 'audit_log' AS table_name",
     "table_macro duckdb_tables"),
    ("a macro replaces json_extract_string()",
     "CREATE MACRO json_extract_string(j, p) AS 'x'",
     "macro json_extract_string"),
    ("a generated column",
     "CREATE TABLE audit_note (seq BIGINT, shown VARCHAR AS ('approved by ' || seq))",
     "generated column audit_note.shown"),
]

ALTERED = [
    ("an unsigned column beside the signed ones", "ALTER TABLE audit_log ADD COLUMN approved_by VARCHAR DEFAULT 'cfo'",
     "audit_log was altered: column approved_by VARCHAR is not in the log's format"),
    ("seq made nullable, then null", "ALTER TABLE audit_log ALTER COLUMN seq DROP NOT NULL; "
                                     "UPDATE audit_log SET seq = NULL WHERE seq = 3",
     "audit_log has 1 row(s) with NULL in seq, which the writer never writes"),
    ("a column retyped", "ALTER TABLE audit_checkpoints ALTER COLUMN tree_size TYPE VARCHAR",
     "audit_checkpoints was altered: column tree_size is VARCHAR where the log's format has BIGINT"),
    ("a column dropped", "ALTER TABLE audit_log DROP COLUMN policy_hash",
     "audit_log was altered: column policy_hash is missing"),
    ("a second meta row", "INSERT INTO audit_meta SELECT * FROM audit_meta", "audit_meta has 2 rows"),
    ("another leaf format", "UPDATE audit_meta SET format = 2", "audit_meta says leaf format 2"),
    # a collation is not in duckdb_columns()' data_type: `WHERE actor = 'alice'` read ALICE's records too, verified OK
    ("a collation on actor", "ALTER TABLE audit_log ALTER actor TYPE VARCHAR COLLATE NOCASE",
     "audit_log was altered: a column is declared COLLATE NOCASE, which the writer never sets"),
    ("a collation on event", "ALTER TABLE audit_log ALTER event TYPE VARCHAR COLLATE noaccent",
     "audit_log was altered: a column is declared COLLATE noaccent"),
    ("a collation on a checkpoint column", "ALTER TABLE audit_checkpoints ALTER key_id TYPE VARCHAR COLLATE nocase",
     "audit_checkpoints was altered: a column is declared COLLATE nocase"),
    # without audit_meta the format went unchecked: each of these verified OK
    ("audit_meta dropped", "DROP TABLE audit_meta", "has no audit_meta table"),
    ("audit_meta dropped, an unsigned column added", "DROP TABLE audit_meta; "
     "ALTER TABLE audit_log ADD COLUMN approved_by VARCHAR DEFAULT 'cfo'", "has no audit_meta table"),
    ("audit_meta dropped, payload retyped", "DROP TABLE audit_meta; ALTER TABLE audit_log ALTER payload TYPE VARCHAR",
     "has no audit_meta table"),
    ("audit_meta dropped, a column beside the checkpoints", "DROP TABLE audit_meta; "
     "ALTER TABLE audit_checkpoints ADD COLUMN witnessed_by VARCHAR DEFAULT 'auditor'", "has no audit_meta table"),
]


def build(path: Path, key: SigningKey, records: int = 8) -> None:
    with AuditLog(path, key, flush_interval=0, origin="stored-code") as log:
        for i in range(1, records + 1):
            log.append("model_call" if i % 2 else "decision", actor=f"u{i}",
                       payload={"model": "clf", "outcome": "deny", "i": i})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("stored-code")
    key = generate_key(folder / "k.key")
    build(folder / "audit.duckdb", key)
    return folder / "audit.duckdb", key


@pytest.fixture
def copy(pristine: tuple[Path, SigningKey], tmp_path: Path) -> tuple[Path, SigningKey]:
    target = tmp_path / "audit.duckdb"
    shutil.copy(pristine[0], target)
    return target, pristine[1]


def sql(path: Path, statement: str) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(statement)
    finally:
        con.close()


def test_the_pristine_log_verifies_and_reads(pristine: tuple[Path, SigningKey]) -> None:
    path, key = pristine
    assert verify_database(path, [key.public]).ok
    assert run_query(path, "SELECT count(*) FROM audit_log").rows == ((8,),)


@pytest.mark.parametrize(("statement", "named"), [c[1:] for c in STORED_CODE], ids=[c[0] for c in STORED_CODE])
def test_code_stored_in_the_file_is_refused_by_verify_and_by_every_reader(
        pristine: tuple[Path, SigningKey], copy: tuple[Path, SigningKey], statement: str, named: str) -> None:
    path, key = copy
    sql(path, statement)
    with pytest.raises(AuditError, match=f"stores .*{named}.*which would run inside whatever reads it"):
        verify_database(path, [key.public])
    with pytest.raises(ReportError, match=named):
        run_query(path, "SELECT count(*) FROM audit_log")
    shown = subprocess.run([sys.executable, "-m", "policyengine", "audit", "verify", "--db", str(path),
                            "--pubkey", str(public_key_path(pristine[0].parent / "k.key"))],
                           capture_output=True, text=True)
    assert shown.returncode == 1 and shown.stderr.startswith("error: ") and named in shown.stderr, shown.stderr


@pytest.mark.parametrize(("statement", "message"), [c[1:] for c in ALTERED], ids=[c[0] for c in ALTERED])
def test_audit_tables_laid_out_otherwise_are_refused(copy: tuple[Path, SigningKey], statement: str,
                                                     message: str) -> None:
    path, key = copy
    sql(path, statement)
    with pytest.raises(AuditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify_database(path, [key.public])


@pytest.mark.parametrize("stored", ["UPPER(leaf_hash)", "' ' || leaf_hash"], ids=["upper case", "leading space"])
def test_a_leaf_hash_stored_in_another_spelling_is_modified(copy: tuple[Path, SigningKey], stored: str) -> None:
    path, key = copy
    sql(path, f"UPDATE audit_log SET leaf_hash = {stored} WHERE seq = 5")
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("modified", 5), failure


@pytest.mark.parametrize(("field", "value"), [
    ("seq", True), ("seq", "2"), ("seq", 2.0), ("ts", "{ts}999"), ("ts", "{ts_space}"), ("actor", 7),
], ids=["seq true", "seq as text", "seq 2.0", "ts with nanoseconds", "ts with a space", "actor a number"])
def test_an_export_line_typed_otherwise_than_signed_is_refused(pristine: tuple[Path, SigningKey], tmp_path: Path,
                                                                field: str, value: object) -> None:
    path, key = pristine
    out = tmp_path / "audit.jsonl"
    export_jsonl(path, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    assert record["type"] == "record" and record["seq"] == 2
    if isinstance(value, str):
        value = value.format(ts=record["ts"][:-1], ts_space=record["ts"].replace("T", " "))
    record[field] = value
    lines[2] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AuditError, match=f":3: record {field} is .*not as the log writes it"):
        verify_export(out, [key.public])


def test_every_file_a_folder_reader_reads_is_verified(tmp_path: Path) -> None:
    """`query --db DIR` and the reports read every *.duckdb file; `audit verify --dir` checks every one."""
    folder = tmp_path / "segs"
    folder.mkdir()
    key = generate_key(tmp_path / "k.key")
    log = SegmentedLog(folder, "audit", key, roll=RollPolicy(records=3), flush_interval=0)
    for i in range(7):
        log.append("decision", payload={"i": i})
    log.close()
    assert verify_segments(folder, [key.public]).ok
    build(folder / "audit.worker0.duckdb", key, records=4)  # a worker's own whole log: read and checked
    assert verify_segments(folder, [key.public]).ok
    forged = duckdb.connect(str(folder / "zz-import.duckdb"))  # records without a checkpoint or a signature
    forged.execute("CREATE TABLE audit_log AS SELECT 1 AS seq, 'model_call' AS event, '{}' AS payload")
    forged.close()
    report = verify_segments(folder, [key.public])
    assert not report.ok and report.failure is not None and report.failure.segment.endswith("zz-import.duckdb")
