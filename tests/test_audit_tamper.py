"""Tampering with a real audit database by SQL is detected, with the right kind and seq."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine.audit import AuditLog, SigningKey, generate_key, verify_database
from policyengine.audit.log import checkpoint_note
from policyengine.audit.segments import RollPolicy, SegmentedLog, SegmentsReport, verify_segments
from policyengine.audit.verify import VerifyReport
from policyengine.audit.proofs import (
    anchor_json,
    checkpoint_from_json,
    latest_checkpoint,
)

RECORDS = 60  # checkpoints every 10 records: at 10, 20, ..., 60


def build_log(path: Path, key: SigningKey, records: int = RECORDS) -> None:
    with AuditLog(path, key, batch_size=10, checkpoint_every=10, flush_interval=0, origin="policyengine") as log:
        for i in range(1, records + 1):
            log.append(
                ["decision", "model_call", "tool_call", "approval"][i % 4],
                actor=f"user-{i % 3}",
                workflow="invoice-exceptions" if i % 2 else None,
                run_id=f"run-{i // 7}",
                payload={"i": i, "amount": i * 1.25, "note": "é\n\"quoted\"", "tags": ["a", i]},
                policy_hash="ph-" + str(i % 5),
            )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("pristine")
    key = generate_key(folder / "k.key")
    build_log(folder / "audit.duckdb", key)
    return folder / "audit.duckdb", key


@pytest.fixture
def copy(pristine: tuple[Path, SigningKey], tmp_path: Path) -> tuple[Path, SigningKey]:
    path, key = pristine
    target = tmp_path / "audit.duckdb"
    shutil.copy(path, target)
    return target, key


def sql(path: Path, statement: str, params: list | None = None) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(statement, params or []).fetchall()
    finally:
        con.close()


def test_pristine_log_verifies(pristine: tuple[Path, SigningKey]) -> None:
    path, key = pristine
    report = verify_database(path, [key.public])
    assert report.ok, report.summary()
    assert (report.records, report.checkpoints, report.unsigned) == (RECORDS, 6, 0)
    assert report.keys == (key.key_id,)


FACT_I, FACT_AMOUNT = '"$.""i"""', '"$.""amount"""'  # audit_facts columns of payload paths i, amount
MODIFY = [
    ("ts", "UPDATE audit_log SET ts = ts + INTERVAL 1 MICROSECOND WHERE seq = 17"),
    ("origin", "UPDATE audit_log SET origin = 'elsewhere' WHERE seq = 17"),
    ("event", "UPDATE audit_log SET event = 'alert' WHERE seq = 17"),
    ("actor", "UPDATE audit_log SET actor = 'mallory' WHERE seq = 17"),
    ("actor to null", "UPDATE audit_log SET actor = NULL WHERE seq = 17"),
    ("workflow", "UPDATE audit_log SET workflow = 'other' WHERE seq = 17"),
    ("run_id", "UPDATE audit_log SET run_id = 'run-99' WHERE seq = 17"),
    ("payload value", "UPDATE audit_log SET payload = replace(payload::VARCHAR, '\"i\":17', '\"i\":18') WHERE seq = 17"),
    ("payload spacing", "UPDATE audit_log SET payload = replace(payload::VARCHAR, ',', ', ') WHERE seq = 17"),
    ("policy_hash", "UPDATE audit_log SET policy_hash = 'ph-x' WHERE seq = 17"),
    ("key_id", "UPDATE audit_log SET key_id = 'ffff' WHERE seq = 17"),
    ("leaf_hash", "UPDATE audit_log SET leaf_hash = sha256('x') WHERE seq = 17"),
    # audit_facts (seq 17 is a model_call): the reports' columns, derived from the signed payload
    ("fact value", f"UPDATE audit_facts SET {FACT_I} = '18' WHERE seq = 17"),
    ("fact to null", f"UPDATE audit_facts SET {FACT_AMOUNT} = NULL WHERE seq = 17"),
    ("fact ts", "UPDATE audit_facts SET ts = ts + INTERVAL 1 MICROSECOND WHERE seq = 17"),
    ("fact row deleted", "DELETE FROM audit_facts WHERE seq = 17"),
    ("fact row duplicated", "INSERT INTO audit_facts SELECT * FROM audit_facts WHERE seq = 17"),
    ("payload and its fact", "UPDATE audit_log SET payload = replace(payload::VARCHAR, '\"i\":17', '\"i\":18') "
                             f"WHERE seq = 17; UPDATE audit_facts SET {FACT_I} = '18' WHERE seq = 17"),
]


@pytest.mark.parametrize(("column", "statement"), MODIFY, ids=[m[0] for m in MODIFY])
def test_modifying_any_column_is_reported_as_modified(copy: tuple[Path, SigningKey], column: str, statement: str) -> None:
    path, key = copy
    sql(path, statement)
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("modified", 17), failure


CASES: list[tuple[str, str, tuple[str, int]]] = [
    ("delete a record", "DELETE FROM audit_log WHERE seq = 23", ("deleted", 23)),
    ("delete a run of records", "DELETE FROM audit_log WHERE seq BETWEEN 23 AND 25", ("deleted", 23)),
    ("swap two seqs", "UPDATE audit_log SET seq = CASE seq WHEN 31 THEN 32 ELSE 31 END WHERE seq IN (31, 32)",
     ("reordered", 31)),
    ("duplicate a record", "INSERT INTO audit_log SELECT * FROM audit_log WHERE seq = 40", ("reordered", 41)),
    ("truncate the tail", "DELETE FROM audit_log WHERE seq > 55", ("truncated", 56)),
    ("forge a signature", "UPDATE audit_checkpoints SET signature = ? WHERE tree_size = 30", ("forged_signature", 21)),
    ("change a signed root", "UPDATE audit_checkpoints SET root = sha256('x') WHERE tree_size = 30",
     ("forged_signature", 21)),
    # the same root or signature spelled otherwise is not what the writer stored: each verified OK
    ("a root in upper case", "UPDATE audit_checkpoints SET root = upper(root) WHERE tree_size = 30",
     ("forged_signature", 21)),
    ("a root with a space", "UPDATE audit_checkpoints SET root = root[1:8] || ' ' || root[9:] WHERE tree_size = 30",
     ("forged_signature", 21)),
    ("a signature with characters outside base64", "UPDATE audit_checkpoints SET signature = '!' || signature || '@' "
     "WHERE tree_size = 30", ("forged_signature", 21)),
    ("a signature broken by a line break", "UPDATE audit_checkpoints SET signature = signature[1:10] || chr(10) || "
     "signature[11:] WHERE tree_size = 30", ("forged_signature", 21)),
    ("a signature with extra padding", "UPDATE audit_checkpoints SET signature = signature || '==' WHERE tree_size = 30",
     ("forged_signature", 21)),
    ("modify and recompute the leaf", "UPDATE audit_log SET actor = 'mallory', leaf_hash = ? WHERE seq = 27",
     ("modified", 21)),
    # every committed record is covered by a checkpoint by construction: uncovered records are tampering
    ("delete every checkpoint", "DELETE FROM audit_checkpoints", ("unsigned", 1)),
    ("delete the newest checkpoint", "DELETE FROM audit_checkpoints WHERE tree_size = 60", ("unsigned", 51)),
    ("delete the newest checkpoints", "DELETE FROM audit_checkpoints WHERE tree_size > 30", ("unsigned", 31)),
    ("fact row for a record that is no model_call", "INSERT INTO audit_facts (seq, ts) SELECT seq, ts FROM audit_log WHERE seq = 18",
     ("modified", 18)),
    ("fact row moved to another seq", "UPDATE audit_facts SET seq = 16 WHERE seq = 17", ("modified", 16)),
    ("fact row of a model_call given to the next one", "DELETE FROM audit_facts WHERE seq = 21; "
     "UPDATE audit_facts SET seq = 21 WHERE seq = 17", ("modified", 17)),
    ("delete every checkpoint, modify and recompute the leaf",
     "DELETE FROM audit_checkpoints; UPDATE audit_log SET actor = 'mallory', leaf_hash = ? WHERE seq = 27",
     ("unsigned", 1)),
]


def _params(name: str, path: Path) -> list:
    if name == "forge a signature":
        return [base64.b64encode(bytes(64)).decode()]
    if name.endswith("modify and recompute the leaf"):
        con = duckdb.connect(str(path), read_only=True)
        from policyengine.audit.sql import q
        from policyengine.audit.verify import exact_leaf

        row = list(con.execute(q("record_columns"), {"seqs": [27]}).fetchone())
        con.close()
        row[4] = "mallory"
        return [exact_leaf(row).hex()]
    return []


@pytest.mark.parametrize(("name", "statement", "expected"), CASES, ids=[c[0] for c in CASES])
def test_structural_tampering_is_named(copy: tuple[Path, SigningKey], name: str, statement: str,
                                       expected: tuple[str, int]) -> None:
    path, key = copy
    sql(path, statement, _params(name, path))
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == expected, failure


@pytest.mark.parametrize("statement", ["DELETE FROM audit_checkpoints", "DELETE FROM audit_checkpoints WHERE tree_size > 30"])
def test_the_writer_refuses_to_sign_over_uncovered_records(copy: tuple[Path, SigningKey], statement: str) -> None:
    """What verify calls tampering the writer must not launder by signing a new checkpoint over it."""
    from policyengine.audit import AuditError

    path, key = copy
    sql(path, statement)
    with pytest.raises(AuditError, match=r"records \d+\.\.60 are not covered by any signed checkpoint"):
        AuditLog(path, key, flush_interval=0)
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and failure.kind == "unsigned"


def test_checkpoint_resigned_by_an_unknown_key(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    mallory = SigningKey.from_key(Ed25519PrivateKey.generate())
    cp = latest_checkpoint(path)
    con = duckdb.connect(str(path), read_only=True)
    root, ts = con.execute("SELECT root, strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') FROM audit_checkpoints WHERE tree_size = 40").fetchone()
    con.close()
    signature = mallory.sign(checkpoint_note(cp.origin, 40, bytes.fromhex(root), ts))
    sql(path, "UPDATE audit_checkpoints SET key_id = ?, signature = ? WHERE tree_size = 40",
        [mallory.key_id, base64.b64encode(signature).decode()])
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("unknown_key", 31), failure


def test_a_wrong_public_key_is_an_unknown_key(copy: tuple[Path, SigningKey]) -> None:
    path, _ = copy
    stranger = SigningKey.from_key(Ed25519PrivateKey.generate())
    failure = verify_database(path, [stranger.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("unknown_key", 1)


def test_tail_deleted_with_its_checkpoints_is_caught_only_by_an_anchor(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    anchor = checkpoint_from_json(anchor_json(latest_checkpoint(path)), "anchor")
    sql(path, "DELETE FROM audit_log WHERE seq > 50")
    sql(path, "DELETE FROM audit_checkpoints WHERE tree_size > 50")
    sql(path, "DELETE FROM audit_facts WHERE seq > 50")  # a careful forger also drops their derived facts
    assert verify_database(path, [key.public]).ok  # invisible from inside
    failure = verify_database(path, [key.public], anchor=anchor).failure
    assert failure is not None and (failure.kind, failure.seq) == ("anchor_not_contained", 51), failure


def test_deletion_hidden_by_renumbering_is_still_a_deletion(copy: tuple[Path, SigningKey]) -> None:
    path, key = copy
    sql(path, "DELETE FROM audit_log WHERE seq = 5")
    sql(path, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 5")
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("deleted", 5), failure


# -- nothing signed: a log, segment or folder file emptied of its records is never OK ---------

EMPTY_TABLES = "DELETE FROM audit_log; DELETE FROM audit_checkpoints; DELETE FROM audit_facts"


def _emptied_database(source: Path, key: SigningKey, tmp_path: Path) -> VerifyReport | SegmentsReport:
    path = tmp_path / "audit.duckdb"
    shutil.copy(source, path)
    sql(path, EMPTY_TABLES)
    return verify_database(path, [key.public])


def _never_written(source: Path, key: SigningKey, tmp_path: Path) -> VerifyReport | SegmentsReport:
    """Opened and closed with no record: the writer signs nothing, so it looks exactly like an emptied log."""
    AuditLog(tmp_path / "new.duckdb", key, flush_interval=0).close()
    return verify_database(tmp_path / "new.duckdb", [key.public])


def _segments(tmp_path: Path, key: SigningKey) -> Path:
    """Segments 1..3 of series ``audit`` (4 records each but the newest)."""
    folder = tmp_path / "segments"
    folder.mkdir()
    with SegmentedLog(folder, "audit", key, roll=RollPolicy(records=4), flush_interval=0) as log:
        for i in range(7):
            log.append("decision", actor=f"user{i}", payload={"i": i})
    return folder


def _emptied_segment(source: Path, key: SigningKey, tmp_path: Path) -> VerifyReport | SegmentsReport:
    folder = _segments(tmp_path, key)
    sql(folder / "audit.000002.duckdb", EMPTY_TABLES)
    return verify_segments(folder, [key.public])


def _emptied_log_beside_segments(source: Path, key: SigningKey, tmp_path: Path) -> VerifyReport | SegmentsReport:
    """A whole log in the folder (a worker's own ``DB.worker<i>.duckdb``): reports read it, so it is checked."""
    folder = _segments(tmp_path, key)
    shutil.copy(source, folder / "audit.worker0.duckdb")
    sql(folder / "audit.worker0.duckdb", EMPTY_TABLES)
    return verify_segments(folder, [key.public])


EMPTIED: list[tuple[str, Callable[[Path, SigningKey, Path], VerifyReport | SegmentsReport], str]] = [
    # (case, how the log was emptied and verified, the file the failure names)
    ("every row of the audit tables deleted", _emptied_database, "audit.duckdb"),
    ("a log never written to", _never_written, "new.duckdb"),
    ("a segment emptied in a folder", _emptied_segment, "audit.000002.duckdb"),
    ("a whole log emptied beside segments", _emptied_log_beside_segments, "audit.worker0.duckdb"),
]


@pytest.mark.parametrize(("case", "empty", "named"), EMPTIED, ids=[c[0] for c in EMPTIED])
def test_a_log_in_which_nothing_is_signed_is_not_ok(
    pristine: tuple[Path, SigningKey], tmp_path: Path, case: str,
    empty: Callable[[Path, SigningKey, Path], VerifyReport | SegmentsReport], named: str,
) -> None:
    """An empty log and one whose records and checkpoints were all deleted look the same: neither is OK."""
    source, key = pristine
    report = empty(source, key, tmp_path)
    failure = report.failure
    assert failure is not None and (failure.kind, failure.seq) == ("nothing_signed", 1), report.summary()
    assert named in report.summary() and "no checkpoint covers any record" in report.summary()
    assert report.to_json()["ok"] is False


# -- property: any single change anywhere is detected ---------------------------------------

COLUMNS = {
    "ts": "ts + INTERVAL (?) MICROSECOND",
    "origin": "?",
    "event": "?",
    "actor": "?",
    "workflow": "?",
    "run_id": "?",
    "payload": "?",
    "policy_hash": "?",
    "key_id": "?",
    "leaf_hash": "?",
}
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
values = {
    "ts": st.integers(1, 10**9),
    "origin": text,
    "event": st.sampled_from(["decision", "alert", "data_access", "key_rotated"]),
    "actor": st.none() | text,
    "workflow": st.none() | text,
    "run_id": st.none() | text,
    "payload": st.dictionaries(text, st.integers() | text, max_size=3).map(
        lambda d: __import__("json").dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))),
    "policy_hash": st.none() | text,
    "key_id": text,
    "leaf_hash": st.binary(min_size=32, max_size=32).map(bytes.hex),
}
mutation = st.one_of(
    st.tuples(st.just("update"), st.integers(1, 20), st.sampled_from(sorted(COLUMNS))).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), values[t[2]])),
    st.tuples(st.just("delete"), st.integers(1, 20), st.none(), st.none()),
    st.tuples(st.just("swap"), st.integers(1, 19), st.integers(1, 19), st.none()),
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("small")
    key = generate_key(folder / "k.key")
    build_log(folder / "audit.duckdb", key, records=20)
    return folder / "audit.duckdb", key


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation)
def test_any_single_change_deletion_or_reordering_is_detected(
    small: tuple[Path, SigningKey], tmp_path: Path, change: tuple
) -> None:
    source, key = small
    path = tmp_path / f"m{abs(hash(change))}.duckdb"
    shutil.copy(source, path)
    kind, seq, column, value = change
    con = duckdb.connect(str(path))
    try:
        if kind == "update":
            old = con.execute(f"SELECT {column}::VARCHAR FROM audit_log WHERE seq = ?", [seq]).fetchone()[0]
            if column != "ts" and (value == old or value is None and old is None):
                return  # not a change
            con.execute(f"UPDATE audit_log SET {column} = {COLUMNS[column]} WHERE seq = ?", [value, seq]).fetchall()
        elif kind == "delete":
            con.execute("DELETE FROM audit_log WHERE seq = ?", [seq]).fetchall()
        else:
            other = column if column != seq else seq + 1
            con.execute("UPDATE audit_log SET seq = CASE WHEN seq = ? THEN ? ELSE ? END WHERE seq IN (?, ?)",
                        [seq, other, seq, seq, other]).fetchall()
    finally:
        con.close()
    report = verify_database(path, [key.public])
    assert not report.ok, change
    path.unlink()


def test_verify_callable_kinds_are_documented() -> None:
    from policyengine.audit.verify import KINDS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"`{kind}`" in doc, kind


def test_a_forged_rotation_to_an_attackers_key_is_not_trusted(copy: tuple[Path, SigningKey]) -> None:
    """Appending a key_rotated record and signing it with the new (attacker's) key proves nothing."""
    from policyengine.audit.canonical import canonical_text
    from policyengine.audit.log import leaf_bytes
    from policyengine.audit.merkle import CompactTree, leaf_hash

    path, key = copy
    mallory = SigningKey.from_key(Ed25519PrivateKey.generate())
    payload = canonical_text({"new_key_id": mallory.key_id, "new_public_key": mallory.public.pem,
                              "old_key_id": key.key_id})
    ts = "2026-11-24T12:00:00.000000Z"
    data = leaf_bytes(seq=RECORDS + 1, ts=ts, origin="policyengine", event="key_rotated", actor=None,
                      workflow=None, run_id=None, payload=payload, policy_hash=None, key_id=key.key_id)
    sql(path, "INSERT INTO audit_log VALUES (?, ?::TIMESTAMPTZ, 'policyengine', 'key_rotated', NULL, NULL, NULL, "
              "?, NULL, ?, ?)", [RECORDS + 1, ts, payload, key.key_id, leaf_hash(data).hex()])
    con = duckdb.connect(str(path), read_only=True)
    leaves = [bytes.fromhex(r[0]) for r in con.execute("SELECT leaf_hash FROM audit_log ORDER BY seq").fetchall()]
    con.close()
    tree = CompactTree()
    tree.extend(leaves)
    note = checkpoint_note("policyengine", RECORDS + 1, tree.root(), ts)
    sql(path, "INSERT INTO audit_checkpoints VALUES ('policyengine', ?, ?, ?::TIMESTAMPTZ, ?, ?)",
        [RECORDS + 1, tree.root().hex(), ts, mallory.key_id, base64.b64encode(mallory.sign(note)).decode()])
    failure = verify_database(path, [key.public]).failure
    assert failure is not None and (failure.kind, failure.seq) == ("unknown_key", RECORDS + 1), failure


CHECKPOINT_CHANGES = {
    "origin": st.text(min_size=1, max_size=8).filter(lambda s: s != "policyengine"),
    "tree_size": st.integers(1, 19),
    "root": st.binary(min_size=32, max_size=32).map(bytes.hex),
    "ts": st.just("2027-01-01 00:00:00+00"),
    "key_id": st.text(min_size=1, max_size=32),
    "signature": st.binary(min_size=64, max_size=64).map(lambda b: base64.b64encode(b).decode()),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(CHECKPOINT_CHANGES)).flatmap(lambda c: st.tuples(st.just(c), CHECKPOINT_CHANGES[c])))
def test_any_change_to_a_checkpoint_is_detected(small: tuple[Path, SigningKey], tmp_path: Path, change: tuple) -> None:
    source, key = small
    path = tmp_path / f"c{abs(hash(change))}.duckdb"
    shutil.copy(source, path)
    column, value = change
    con = duckdb.connect(str(path))
    try:
        old = con.execute(f"SELECT {column}::VARCHAR FROM audit_checkpoints WHERE tree_size = 20").fetchone()[0]
        if str(value) == old:
            return
        con.execute(f"UPDATE audit_checkpoints SET {column} = ? WHERE tree_size = 20", [value]).fetchall()
    finally:
        con.close()
    assert not verify_database(path, [key.public]).ok, change
    path.unlink()


json_scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=8) | st.floats(allow_nan=False)
json_any = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def proof(small: tuple[Path, SigningKey]) -> dict:
    from policyengine.audit.proofs import prove

    return prove(small[0], 7)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["record", "leaf_index", "audit_path", "checkpoint", "type"]), st.data())
def test_a_damaged_inclusion_proof_is_rejected_with_an_audit_error(
    small: tuple[Path, SigningKey], proof: dict, part: str, data: st.DataObject
) -> None:
    """Whatever is changed in a proof, the answer is a clear rejection, never a crash or a pass."""
    import copy as copying

    from policyengine.audit import AuditError
    from policyengine.audit.proofs import verify_proof

    _, key = small
    damaged = copying.deepcopy(proof)
    if part in ("record", "checkpoint"):  # leaf_hash, note and type too: a proof says nothing unverified
        field = data.draw(st.sampled_from(sorted(damaged[part])))
        damaged[part][field] = data.draw(json_any.filter(lambda v, old=damaged[part][field]: v != old))
    else:
        damaged[part] = data.draw(json_any.filter(lambda v, old=damaged[part]: v != old))
    assert verify_proof(proof, [key.public]).startswith("proof: OK")
    with pytest.raises(AuditError):
        verify_proof(damaged, [key.public])


# -- proofs and anchors say nothing that was not verified ----------------------------------------
# Each edit below verified OK: unverified fields beside the verified ones, a repeated key (a reader taking the
# first copy sees another record), a leaf hash or note that says otherwise, a root or signature spelled otherwise.


def _text_edit(old: str, new: str) -> Callable[[dict, str], str]:
    return lambda data, text: text.replace(old, new, 1)


def _data_edit(change: Callable[[dict], None]) -> Callable[[dict, str], str]:
    def edit(data: dict, text: str) -> str:
        change(data)
        return __import__("json").dumps(data)
    return edit


PROOF_EDITS: list[tuple[str, Callable[[dict, str], str], str]] = [
    ("an unsigned field in the record", _data_edit(lambda d: d["record"].update(approved_by="cfo")),
     "record has unsigned field(s) approved_by"),
    ("an unsigned field beside the record", _data_edit(lambda d: d.update(verdict="allow")),
     "proof has unsigned field(s) verdict"),
    ("an unsigned field in the checkpoint", _data_edit(lambda d: d["checkpoint"].update(witness="x")),
     "checkpoint has unsigned field(s) witness"),
    ("a key given twice in the record", _text_edit('"event": "', '"event": "alert", "event": "'),
     "duplicate key 'event'"),
    ("another leaf hash", _data_edit(lambda d: d["record"].update(leaf_hash="00" * 32)), "names leaf hash 0000"),
    ("the leaf hash in upper case", _data_edit(lambda d: d["record"].update(leaf_hash=d["record"]["leaf_hash"].upper())),
     "names leaf hash"),
    ("another note", _data_edit(lambda d: d["checkpoint"].update(note="other\n99\nAAAA\nts\n")),
     "note says other than its signed fields"),
    ("another checkpoint type", _data_edit(lambda d: d["checkpoint"].update(type="x")), "not a checkpoint anchor"),
    ("the root in upper case", _data_edit(lambda d: d["checkpoint"].update(root=d["checkpoint"]["root"].upper())),
     "not spelled as the log writes it"),
    ("an audit path hash in upper case", _data_edit(lambda d: d.update(audit_path=[h.upper() for h in d["audit_path"]])),
     "not lower-case hex"),
]


@pytest.mark.parametrize(("case", "edit", "message"), PROOF_EDITS, ids=[e[0] for e in PROOF_EDITS])
def test_an_edited_proof_file_fails_verify_proof(small: tuple[Path, SigningKey], tmp_path: Path, case: str,
                                                 edit: Callable[[dict, str], str], message: str) -> None:
    import json
    import subprocess
    import sys

    from policyengine.audit.keys import public_key_path
    from policyengine.audit.proofs import prove

    source, key = small
    path = tmp_path / "proof.json"
    text = json.dumps(prove(source, 7), indent=2)
    path.write_text(edit(json.loads(text), text), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "policyengine", "audit", "verify-proof", str(path), "--pubkey",
                           str(public_key_path(source.parent / "k.key"))], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == "", (case, done.stdout)
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr


ANCHOR_EDITS = [e for e in PROOF_EDITS if "checkpoint" in e[0] or "note" in e[0] or "root" in e[0]] + [
    ("a key given twice in the anchor", _text_edit('"tree_size": ', '"tree_size": 1, "tree_size": '),
     "duplicate key 'tree_size'"),
]


@pytest.mark.parametrize(("case", "edit", "message"), ANCHOR_EDITS, ids=[e[0] for e in ANCHOR_EDITS])
def test_an_edited_anchor_file_fails_verify(small: tuple[Path, SigningKey], tmp_path: Path, case: str,
                                            edit: Callable[[dict, str], str], message: str) -> None:
    import json
    import subprocess
    import sys

    from policyengine.audit.keys import public_key_path

    source, key = small
    path = tmp_path / "anchor.json"
    text = json.dumps({"checkpoint": anchor_json(latest_checkpoint(source))}, indent=2)
    edited = json.loads(edit(json.loads(text), text)) if "twice" not in case else None
    if edited is None:  # the repeated key is in the text: keep it there
        body = edit({}, text)
        path.write_text(body[body.index("{", 1):body.rindex("}")].rstrip(), encoding="utf-8")
    else:
        path.write_text(json.dumps(edited["checkpoint"]), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "policyengine", "audit", "verify", "--db", str(source), "--anchor",
                           str(path), "--pubkey", str(public_key_path(source.parent / "k.key"))],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "OK" not in done.stdout, (case, done.stdout)
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
