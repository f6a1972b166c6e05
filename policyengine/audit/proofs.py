"""Portable evidence: anchor files and inclusion proofs that verify without the database.

An anchor is one signed checkpoint kept outside the database (by an auditor or a
witness): deleting the tail of the log together with its checkpoints cannot be
seen from inside, but it can against an anchor. An inclusion proof carries one
record, the RFC 9162 audit path from its leaf to a checkpoint's root, and that
signed checkpoint; with the public key alone anyone can check it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import duckdb

from .canonical import CanonicalJSONError, canonical_text
from .errors import AuditError
from .export import RECORD_COLUMNS, _DuplicateKey, _exact_keys, open_readonly, strict_json
from .keys import PublicKey
from .log import Checkpoint
from .merkle import MerkleTree, verify_inclusion
from .sql import q
from .verify import _base64, _hex, exact_leaf, revocations

ANCHOR_TYPE = "policyengine-audit-checkpoint"
PROOF_TYPE = "policyengine-audit-inclusion"
CONSISTENCY_TYPE = "policyengine-audit-consistency"
# The exact keys `audit checkpoint --out` and `audit prove` write: a key more (unsigned, unverified) or less is refused.
ANCHOR_KEYS = frozenset({"type", "origin", "tree_size", "root", "ts", "key_id", "signature", "note"})
PROOF_KEYS = frozenset({"type", "record", "leaf_index", "audit_path", "checkpoint"})


def latest_checkpoint(db: str | os.PathLike[str]) -> Checkpoint:
    """The log's latest checkpoint, to publish (``latest_signed``)."""
    with open_readonly(db) as con:
        return latest_signed(con, db)


def latest_signed(con: duckdb.DuckDBPyConnection, db: str | os.PathLike[str], nothing: str = "") -> Checkpoint:
    """The latest checkpoint of the log open on ``con``, for an anchor, a signed note, a proof or tiles.

    Refused when there is none (``nothing`` says what then cannot be done) and when its key was rotated away
    below it: such a key signs nothing after its rotation record, and a witness or monitor would keep it.
    """
    try:
        row = con.execute(q("latest_checkpoint")).fetchone()
        checkpoint = None if row is None else Checkpoint.from_row(row)
    except (duckdb.Error, ValueError, TypeError) as err:
        raise AuditError(f"{db}: malformed audit_checkpoints table ({str(err).splitlines()[0]})") from None
    if checkpoint is None:
        raise AuditError(f"{db}: has no checkpoint yet{nothing}")
    try:
        rotations = con.execute(q("rotations")).fetchall()
    except duckdb.Error as err:
        raise AuditError(f"{db}: malformed audit_log table ({str(err).splitlines()[0]})") from None
    retired = revocations(rotations).get(checkpoint.key_id)
    if retired is not None and retired < checkpoint.tree_size:
        raise AuditError(f"{db}: the latest checkpoint (size {checkpoint.tree_size}) is signed by key "
                         f"{checkpoint.key_id}, rotated away at seq {retired}; a rotated-away key signs nothing after "
                         "its rotation record (run `policyengine audit verify`)")
    return checkpoint


def anchor_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"type": ANCHOR_TYPE, **checkpoint.to_json(), "note": checkpoint.note().decode("utf-8")}


def read_json_file(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    try:
        data = strict_json(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise AuditError(f"{path}: cannot read {what} ({err.strerror})") from None
    except _DuplicateKey as err:  # which copy was signed would be the reader's guess
        raise AuditError(f"{path}: {what} has a {err}; refusing it") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise AuditError(f"{path}: {what} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise AuditError(f"{path}: {what} must be a JSON object")
    return data


def checkpoint_from_json(data: dict[str, Any], where: str) -> Checkpoint:
    try:
        if not isinstance(data["root"], str) or not isinstance(data["signature"], str):
            raise TypeError("root and signature must be strings")
        if type(data["tree_size"]) is not int:
            raise TypeError("tree_size must be an integer")
        root, signature = _hex(data["root"]), _base64(data["signature"])
        if not root or not signature:  # read only as written: lower-case hex, padded standard base64
            raise ValueError("root or signature is not spelled as the log writes it")
        return Checkpoint(
            origin=str(data["origin"]),
            tree_size=int(data["tree_size"]),
            root=root,
            ts=str(data["ts"]),
            key_id=str(data["key_id"]),
            signature=signature,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise AuditError(f"{where}: malformed checkpoint ({err.__class__.__name__}: {err})") from None


def _anchored_checkpoint(data: Any, where: str) -> Checkpoint:
    """An anchor's checkpoint (a file of its own, or a proof's): exactly the fields written, its type, and a
    ``note`` that is the checkpoint's signed note, so nothing in it says other than what was verified."""
    if not isinstance(data, dict):
        raise AuditError(f"{where}: malformed checkpoint (not an object)")
    _exact_keys(data, ANCHOR_KEYS, "checkpoint", where)
    if data["type"] != ANCHOR_TYPE:
        raise AuditError(f"{where}: not a checkpoint anchor (written by `policyengine audit checkpoint --out`)")
    checkpoint = checkpoint_from_json(data, where)
    if data["note"] != checkpoint.note().decode("utf-8"):
        raise AuditError(f"{where}: the checkpoint's note says other than its signed fields; refusing it")
    return checkpoint


def read_anchor(path: str | os.PathLike[str]) -> Checkpoint:
    data = read_json_file(path, "anchor")
    if data.get("type") != ANCHOR_TYPE:
        raise AuditError(f"{path}: not a checkpoint anchor (written by `policyengine audit checkpoint --out`)")
    return _anchored_checkpoint(data, str(path))


def prove(db: str | os.PathLike[str], seq: int) -> dict[str, Any]:
    """An inclusion proof of record ``seq`` in the latest checkpoint covering it."""
    record, checkpoint, tree = _proof_parts(db, seq)
    record["payload"] = json.loads(record["payload"])
    return {
        "type": PROOF_TYPE,
        "record": record,
        "leaf_index": seq - 1,
        "audit_path": [h.hex() for h in tree.inclusion_proof(seq - 1)],
        "checkpoint": anchor_json(checkpoint),
    }


def prove_tlog(db: str | os.PathLike[str], seq: int, public: PublicKey) -> str:
    """Record ``seq``'s inclusion proof in the c2sp.org/tlog-proof@v1 text format.

    The ``extra`` line carries the record's canonical bytes, so a verifier
    recomputes the leaf hash (SHA-256 of 0x00 and them) without the database;
    the checkpoint follows as a C2SP signed note.
    """
    from .notes import signed_note

    record, checkpoint, tree = _proof_parts(db, seq)
    row = [record[c] for c in RECORD_COLUMNS]
    data = _canonical_record(row)
    lines = ["c2sp.org/tlog-proof@v1", f"extra {base64.b64encode(data).decode('ascii')}", f"index {seq - 1}"]
    lines += [base64.b64encode(h).decode("ascii") for h in tree.inclusion_proof(seq - 1)]
    return "\n".join(lines) + "\n\n" + signed_note(checkpoint, public)


def _canonical_record(row: list[Any]) -> bytes:
    from .log import leaf_bytes

    names = dict(zip(RECORD_COLUMNS, row, strict=True))
    names.pop("leaf_hash")
    return leaf_bytes(**names)


def prove_consistency(db: str | os.PathLike[str], old_size: int) -> dict[str, Any]:
    """An RFC 9162 consistency proof from the tree of ``old_size`` records to the latest checkpoint.

    A witness or monitor holding a checkpoint of ``old_size`` checks that the
    log only grew since: the old root it holds, this proof and the new signed
    checkpoint must agree (``merkle.verify_consistency``).
    """
    with open_readonly(db) as con:
        checkpoint = latest_signed(con, db, "; nothing can be proved")
        if not 1 <= old_size <= checkpoint.tree_size:
            raise AuditError(f"{db}: old size {old_size} is not within the latest checkpoint (1..{checkpoint.tree_size})")
        tree = _tree(con, db, checkpoint)
    return {
        "type": CONSISTENCY_TYPE,
        "old_size": old_size,
        "old_root": base64.b64encode(tree.root(old_size)).decode("ascii"),
        "proof": [base64.b64encode(h).decode("ascii") for h in tree.consistency_proof(old_size)],
        "checkpoint": anchor_json(checkpoint),
    }


def _tree(con: duckdb.DuckDBPyConnection, db: str | os.PathLike[str], checkpoint: Checkpoint) -> MerkleTree:
    try:
        leaves = [r[0] for r in con.execute(q("leaf_hashes_upto"), {"size": checkpoint.tree_size}).fetchall()]
    except duckdb.Error as err:
        raise AuditError(f"{db}: malformed audit_log table ({str(err).splitlines()[0]})") from None
    if len(leaves) != checkpoint.tree_size:
        raise AuditError(f"{db}: records do not match the checkpoint; run `policyengine audit verify`")
    try:
        tree = MerkleTree([bytes.fromhex(h) for h in leaves])
    except ValueError:
        raise AuditError(f"{db}: a leaf hash is not hex; run `policyengine audit verify`") from None
    if tree.root() != checkpoint.root:
        raise AuditError(f"{db}: records do not hash to the latest checkpoint; run `policyengine audit verify`")
    return tree


def _proof_parts(db: str | os.PathLike[str], seq: int) -> tuple[dict[str, Any], Checkpoint, MerkleTree]:
    with open_readonly(db) as con:
        checkpoint = latest_signed(con, db, "; nothing can be proved")
        if not 1 <= seq <= checkpoint.tree_size:
            raise AuditError(f"{db}: seq {seq} is not covered by the latest checkpoint (1..{checkpoint.tree_size})")
        try:
            records = con.execute(q("record_columns"), {"seqs": [seq]}).fetchall()
        except duckdb.Error as err:
            raise AuditError(f"{db}: malformed audit_log table ({str(err).splitlines()[0]})") from None
        if len(records) != 1:
            raise AuditError(f"{db}: records do not match the checkpoint; run `policyengine audit verify`")
        tree = _tree(con, db, checkpoint)
    return dict(zip(RECORD_COLUMNS, records[0], strict=True)), checkpoint, tree


def verify_proof(data: dict[str, Any], trusted: list[PublicKey], where: str = "proof") -> str:
    """Check an inclusion proof; return a one-line summary or raise AuditError."""
    if data.get("type") != PROOF_TYPE:
        raise AuditError(f"{where}: not an inclusion proof (written by `policyengine audit prove`)")
    _exact_keys(data, PROOF_KEYS, "proof", where)
    checkpoint = _anchored_checkpoint(data["checkpoint"], where)
    if not isinstance(data["record"], dict):
        raise AuditError(f"{where}: malformed proof (record is not an object)")
    _exact_keys(data["record"], frozenset(RECORD_COLUMNS), "record", where)
    try:
        record = data["record"]
        row = [record[c] for c in RECORD_COLUMNS]
        row[RECORD_COLUMNS.index("payload")] = canonical_text(record["payload"])
        index = data["leaf_index"]
        path = [_hex(h) for h in data["audit_path"]]
        if not all(path):  # read only as written (lower-case hex), like every stored hash
            raise ValueError("an audit path hash is not lower-case hex")
        if type(record["seq"]) is not int or type(index) is not int or not isinstance(record["event"], str):
            raise TypeError("seq and leaf_index must be integers and event a string")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, CanonicalJSONError) as err:
        raise AuditError(f"{where}: malformed proof ({err.__class__.__name__}: {err})") from None
    keys = {k.key_id: k for k in trusted}
    key = keys.get(checkpoint.key_id)
    if key is None:
        raise AuditError(f"{where}: checkpoint is signed by key {checkpoint.key_id}, which is not among the given keys")
    if not key.verify(checkpoint.signature, checkpoint.note()):
        raise AuditError(f"{where}: forged signature on the checkpoint at tree size {checkpoint.tree_size}")
    leaf = exact_leaf(row)
    if leaf is None or index != record["seq"] - 1:
        raise AuditError(f"{where}: record {record.get('seq')} cannot be encoded canonically")
    if not verify_inclusion(index, checkpoint.tree_size, leaf, path, checkpoint.root):
        raise AuditError(f"{where}: record {record['seq']} is NOT included in the checkpoint at tree size {checkpoint.tree_size}")
    if record["leaf_hash"] != leaf.hex():
        raise AuditError(f"{where}: record {record['seq']} names leaf hash {str(record['leaf_hash'])[:16]}..., "
                         f"but its columns (included) hash to {leaf.hex()[:16]}...; refusing it")
    return (f"{where}: OK, record {record['seq']} ({record['event']}) is included in {checkpoint.origin!r} "
            f"at tree size {checkpoint.tree_size}, signed by {checkpoint.key_id}")
