"""Exports verify on their own, and refuse what the signatures do not cover.

Parquet is imported by column name with its schema checked; a JSON Lines line
with a duplicate key or a field the signed record does not have is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import AuditError, AuditLog, export_jsonl, export_parquet, generate_key, verify_export


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("exports")
    key = generate_key(folder / "k.key")
    db = folder / "audit.duckdb"
    with AuditLog(db, key, flush_interval=0, batch_size=4, checkpoint_every=4) as writer:
        for i in range(10):
            writer.append("decision", actor=f"user-{i}", workflow=f"wf-{i % 3}", run_id=f"run-{i}",
                          payload={"i": i, "decision": {"effect": "deny" if i % 2 else "allow"}})
    export_jsonl(db, folder / "a.jsonl")
    export_parquet(db, folder / "a.parquet")
    return folder, key


def test_both_exports_verify(log) -> None:
    folder, key = log
    for name in ("a.jsonl", "a.parquet"):
        report = verify_export(folder / name, [key.public])
        assert report.ok and report.records == 10, report.summary()


def _rewrite_parquet(source: Path, target: Path, select: str, where: str = "true",
                     header: Callable[[dict], dict] | None = None) -> None:
    """Copy an export's rows (``select`` ... ``where``) and its metadata, edited by ``header`` if given."""
    con = duckdb.connect()
    try:
        meta = con.execute("SELECT decode(value) FROM parquet_kv_metadata(?) WHERE decode(key) = 'policyengine_audit'",
                           [str(source)]).fetchone()[0]
        if header is not None:
            meta = json.dumps(header(json.loads(meta)))
        con.execute(f"COPY (SELECT {select} FROM read_parquet('{source}') WHERE {where}) TO '{target}' "
                    "(FORMAT parquet, KV_METADATA {policyengine_audit: $meta})", {"meta": meta})
    finally:
        con.close()


ALL = "seq, ts, origin, event, actor, workflow, run_id, payload, policy_hash, key_id, leaf_hash"
PARQUET_CASES = [
    # name, SELECT list, what verify says (a failure kind, or the AuditError text)
    ("actor and workflow names swapped", ALL.replace("actor, workflow", "actor AS workflow, workflow AS actor"),
     "modified"),
    ("columns reordered, names kept", ALL.replace("actor, workflow", "workflow, actor"), None),
    ("an extra column", ALL + ", 'x' AS note", "unexpected column(s) note"),
    ("a column missing", ALL.replace(", run_id", ""), "missing column(s) run_id"),
    ("seq as text", ALL.replace("seq,", "seq::VARCHAR AS seq,", 1), "column seq is VARCHAR"),
]


@pytest.mark.parametrize(("name", "select", "expected"), PARQUET_CASES, ids=[c[0] for c in PARQUET_CASES])
def test_parquet_is_read_by_column_name_with_its_schema_checked(log, tmp_path: Path, name: str, select: str,
                                                                expected: str | None) -> None:
    folder, key = log
    target = tmp_path / "t.parquet"
    _rewrite_parquet(folder / "a.parquet", target, select)
    if expected is None:
        assert verify_export(target, [key.public]).ok
    elif expected == "modified":
        failure = verify_export(target, [key.public]).failure
        assert failure is not None and (failure.kind, failure.seq) == ("modified", 1), failure
    else:
        with pytest.raises(AuditError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            verify_export(target, [key.public])


GLOBBED = [
    # (the tampered export's name, a pristine export's name beside it that DuckDB's pattern reading matches)
    ("audit[1].parquet", "audit1.parquet"),  # verified audit1.parquet and said OK
    ("audit*.parquet", "audit-2.parquet"),
    ("audit?.parquet", "auditX.parquet"),
]


@pytest.mark.parametrize(("name", "beside"), GLOBBED, ids=[g[0] for g in GLOBBED])
def test_a_parquet_path_duckdb_would_read_as_a_pattern_is_refused(log, tmp_path: Path, name: str, beside: str) -> None:
    """read_parquet globs its path: the file named is verified, or nothing is."""
    folder, key = log
    _rewrite_parquet(folder / "a.parquet", tmp_path / name, ALL.replace("actor,", "'mallory' AS actor,"))
    _rewrite_parquet(folder / "a.parquet", tmp_path / beside, ALL)
    with pytest.raises(AuditError, match=r"as a pattern, so other files would be verified"):
        verify_export(tmp_path / name, [key.public])


@pytest.mark.parametrize("first", ["header with one checkpoint", "the same header"])
def test_parquet_metadata_with_the_audit_header_twice_is_refused(log, tmp_path: Path, first: str) -> None:
    """pyarrow and pandas show the first header, DuckDB's reader gave verify the last: it said OK."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, key = log
    table = pq.read_table(folder / "a.parquet")
    header = table.schema.metadata[b"policyengine_audit"]
    shown = dict(json.loads(header), checkpoints=json.loads(header)["checkpoints"][:1])
    twice = pa.KeyValueMetadata([(b"policyengine_audit", json.dumps(shown).encode() if "one" in first else header),
                                 (b"policyengine_audit", header)])
    target = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_batches(table.to_batches(), schema=pa.schema(table.schema, metadata=twice)), target)
    with pytest.raises(AuditError, match="policyengine_audit metadata more than once"):
        verify_export(target, [key.public])


def _edit_line(text: str, kind: str, edit) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == kind)
    lines[index] = edit(lines[index])
    return "\n".join(lines) + "\n"


JSONL_CASES = [
    ("duplicate key in a record", "record", lambda line: line.replace('"actor": "user-0"', '"actor": "user-0", "actor": "mallory"'),
     "duplicate key 'actor'"),
    ("duplicate key hidden in the payload", "record",
     lambda line: line.replace('"effect":"allow"', '"effect":"allow","effect":"deny"'), "duplicate key 'effect'"),
    ("extra unsigned field on a record", "record", lambda line: line[:-1] + ',"approved_by":"cfo"}',
     "unsigned field(s) approved_by"),
    ("extra field on a checkpoint line", "checkpoint", lambda line: line[:-1] + ',"note":"x"}',
     "unsigned field(s) note"),
    ("extra field in the header", "header", lambda line: line[:-1] + ',"comment":"x"}', "unsigned field(s) comment"),
    ("a record field missing", "record", lambda line: line.replace('"run_id": "run-0", ', ""), "lacks run_id"),
]


RESPELLED = [
    # a checkpoint line whose root or signature is the signed one spelled otherwise: each verified OK
    ("root in upper case", lambda cp: {**cp, "root": cp["root"].upper()}),
    ("signature with a stray character", lambda cp: {**cp, "signature": "!" + cp["signature"]}),
    ("signature split by an escaped line break", lambda cp: {**cp, "signature": cp["signature"][:8] + "\n" + cp["signature"][8:]}),
]


@pytest.mark.parametrize(("name", "respell"), RESPELLED, ids=[c[0] for c in RESPELLED])
def test_a_jsonl_checkpoint_spelled_otherwise_is_forged(log, tmp_path: Path, name: str, respell) -> None:
    folder, key = log
    target = tmp_path / "t.jsonl"
    original = (folder / "a.jsonl").read_text(encoding="utf-8")
    target.write_text(_edit_line(original, "checkpoint", lambda line: json.dumps(respell(json.loads(line)))),
                      encoding="utf-8")
    failure = verify_export(target, [key.public]).failure
    assert failure is not None and failure.kind == "forged_signature", failure


@pytest.mark.parametrize(("name", "kind", "edit", "message"), JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_jsonl_with_duplicate_keys_or_unsigned_fields_is_refused(log, tmp_path: Path, name: str, kind: str, edit,
                                                                 message: str) -> None:
    folder, key = log
    target = tmp_path / "t.jsonl"
    original = (folder / "a.jsonl").read_text(encoding="utf-8")
    changed = _edit_line(original, kind, edit)
    assert changed != original
    target.write_text(changed, encoding="utf-8")
    with pytest.raises(AuditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify_export(target, [key.public])


def _header_line_only(folder: Path, target: Path) -> None:
    lines = (folder / "a.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text(lines[0], encoding="utf-8")


def _parquet_without_rows(folder: Path, target: Path) -> None:
    _rewrite_parquet(folder / "a.parquet", target, ALL, where="false", header=lambda h: {**h, "checkpoints": []})


EMPTIED = [
    # every record and every checkpoint taken out of an export: what is left signs nothing
    ("JSON Lines cut to its header line", "t.jsonl", _header_line_only),
    ("Parquet with no rows and no checkpoints", "t.parquet", _parquet_without_rows),
]


@pytest.mark.parametrize(("name", "file", "empty"), EMPTIED, ids=[c[0] for c in EMPTIED])
def test_an_export_emptied_of_records_and_checkpoints_is_not_ok(log, tmp_path: Path, name: str, file: str,
                                                                empty: Callable[[Path, Path], None]) -> None:
    folder, key = log
    target = tmp_path / file
    empty(folder, target)
    report = verify_export(target, [key.public])
    assert (report.records, report.checkpoints) == (0, 0), report.summary()
    failure = report.failure
    assert failure is not None and (failure.kind, failure.seq) == ("nothing_signed", 1), report.summary()
    assert "no checkpoint covers any record" in report.summary()
    assert report.to_json()["ok"] is False


def test_verify_export_times_the_whole_load(log, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seconds reported include reading the file, not only the checks after it."""
    import policyengine.audit.export as export

    folder, key = log
    clock = [0.0]
    original = export._load_jsonl

    def slow_load(con, path):  # loading takes 100 s on this clock; nothing else moves it
        original(con, path)
        clock[0] += 100.0

    monkeypatch.setattr(export.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(export, "_load_jsonl", slow_load)
    report = verify_export(folder / "a.jsonl", [key.public])
    assert report.ok and report.seconds == 100.0
