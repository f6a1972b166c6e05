"""Rotation revokes: after ``key_rotated``, the old key signs nothing, and verify says so in its own words."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import AuditLog, generate_key, verify_database
from policyengine.audit.canonical import canonical_text
from policyengine.audit.log import checkpoint_note, leaf_bytes
from policyengine.audit.merkle import CompactTree, leaf_hash
from policyengine.audit.proofs import latest_checkpoint

TS = "2027-01-01T00:00:00.000000Z"


@pytest.fixture
def rotated(tmp_path: Path):
    """A log of 5 records by OLD, the rotation at seq 6, and 4 records by NEW (10 in all)."""
    db = tmp_path / "audit.duckdb"
    old, new = generate_key(tmp_path / "old.key"), generate_key(tmp_path / "new.key")
    with AuditLog(db, old, flush_interval=0, origin="policyengine") as log:
        for i in range(5):
            log.append("decision", actor="a", payload={"i": i})
        assert log.rotate_key(new) == 6
        for i in range(4):
            log.append("decision", actor="a", payload={"i": i})
    assert verify_database(db, [old.public]).ok
    return db, old, new


def _append_signed_by(db: Path, signer, key_id: str, count: int) -> int:
    """What a holder of a rotated-away key can do: append records under ``key_id`` and sign a checkpoint over them."""
    con = duckdb.connect(str(db))
    try:
        leaves = [bytes.fromhex(r[0]) for r in con.execute("SELECT leaf_hash FROM audit_log ORDER BY seq").fetchall()]
        size = len(leaves)
        for seq in range(size + 1, size + count + 1):
            payload = canonical_text({"request": {"principal": {"id": "mallory"}}, "decision": {"effect": "allow"}})
            data = leaf_bytes(seq=seq, ts=TS, origin="policyengine", event="decision", actor="mallory", workflow=None,
                              run_id=None, payload=payload, policy_hash=None, key_id=key_id)
            con.execute("INSERT INTO audit_log VALUES (?, ?::TIMESTAMPTZ, 'policyengine', 'decision', 'mallory', "
                        "NULL, NULL, ?, NULL, ?, ?)", [seq, TS, payload, key_id, leaf_hash(data).hex()])
            leaves.append(leaf_hash(data))
        tree = CompactTree()
        tree.extend(leaves)
        note = checkpoint_note("policyengine", len(leaves), tree.root(), TS)
        con.execute("INSERT INTO audit_checkpoints VALUES ('policyengine', ?, ?, ?::TIMESTAMPTZ, ?, ?)",
                    [len(leaves), tree.root().hex(), TS, signer.key_id, base64.b64encode(signer.sign(note)).decode()])
        return size + 1
    finally:
        con.close()


def test_the_rotated_away_key_cannot_sign_new_records(rotated, tmp_path: Path) -> None:
    db, old, new = rotated
    first = _append_signed_by(db, old, old.key_id, 3)
    assert first == 11
    for trusted in ([old.public], [old.public, new.public]):  # trusting the old key directly changes nothing
        failure = verify_database(db, trusted).failure
        assert failure is not None and (failure.kind, failure.seq) == ("revoked_key", first), failure
        assert "rotated away at seq 6" in failure.message


def test_even_with_the_latest_anchor_the_old_keys_checkpoint_is_refused(rotated, tmp_path: Path) -> None:
    db, old, new = rotated
    anchor = latest_checkpoint(db)
    _append_signed_by(db, old, old.key_id, 2)
    failure = verify_database(db, [old.public], anchor=anchor).failure
    assert failure is not None and failure.kind == "revoked_key", failure


def test_an_anchor_signed_by_the_rotated_away_key_is_refused(rotated, tmp_path: Path) -> None:
    db, old, new = rotated
    genuine = latest_checkpoint(db)
    from dataclasses import replace

    forged = replace(genuine, key_id=old.key_id, signature=old.sign(genuine.note()))
    failure = verify_database(db, [old.public], anchor=forged).failure
    assert failure is not None and (failure.kind, failure.seq) == ("revoked_key", 7), failure


def test_the_new_key_keeps_signing_and_the_old_key_cannot_reopen(rotated, tmp_path: Path) -> None:
    from policyengine.audit import AuditError

    db, old, new = rotated
    with pytest.raises(AuditError, match="signed by key"):
        AuditLog(db, old, flush_interval=0)
    with AuditLog(db, new, flush_interval=0) as log:
        log.append("alert", payload={"kind": "x"})
    assert verify_database(db, [old.public]).ok


@pytest.mark.parametrize("publish", [
    ["audit", "checkpoint"],
    ["audit", "checkpoint", "--format", "note", "--pubkey", "old.key.pub.pem"],
    ["audit", "prove", "3"],
    ["audit", "export", "--tiles", "tiles", "--pubkey", "old.key.pub.pem"],
])
def test_a_checkpoint_signed_by_the_rotated_away_key_is_not_published(rotated, tmp_path: Path,
                                                                      publish: list[str]) -> None:
    """What a witness or monitor keeps must verify: the commands that publish the latest checkpoint refuse one
    signed by a key rotated away below it (they published it as it stood, and only verify said no)."""
    db, old, new = rotated
    _append_signed_by(db, old, old.key_id, 2)
    done = subprocess.run([sys.executable, "-m", "policyengine", *publish, "--db", str(db)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and f"signed by key {old.key_id}, rotated away at seq 6" in done.stderr
    assert not (tmp_path / "tiles" / "checkpoint").exists()


def test_keys_rotate_back_to_a_rotated_away_key_is_refused_and_the_log_still_verifies(tmp_path: Path) -> None:
    """Rotating a -> b, then b -> a was accepted: every record a signed after that failed `audit verify` as
    'revoked key' (a rotated-away key signs nothing after its rotation record), so the log was lost to verifiers."""
    a, b = generate_key(tmp_path / "a.key"), generate_key(tmp_path / "b.key")
    db = tmp_path / "audit.duckdb"
    with AuditLog(db, a) as log:
        log.append("decision", payload={"i": 1})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)

    assert cli("keys", "rotate", "--db", str(db), "--key", "a.key", "--new-key", "b.key").returncode == 0
    back = cli("keys", "rotate", "--db", str(db), "--key", "b.key", "--new-key", "a.key")
    assert back.returncode == 1 and back.stderr.strip().splitlines() == [
        f"error: {db}: key {a.key_id} was rotated away at seq 2; rotate to a new key (`policyengine keys generate`)"]
    with AuditLog(db, b) as log:  # the log goes on with b
        log.append("decision", payload={"i": 2})
    report = verify_database(db, [a.public])
    assert report.ok and report.records == 3, report.summary()
