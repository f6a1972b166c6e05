"""Check an audit log end to end and name the first thing wrong with it.

Three independent checks, each able to localise a fault to a seq:

1. sequence: seq runs 1, 2, 3, ... (a gap means a record was deleted);
2. leaves: every record's stored leaf hash equals the hash of its canonical bytes,
   computed for every record, always, by the one canonicaliser the writer uses
   (``leaf_bytes`` and ``canonical_text``): no second encoder whose escaping could
   differ, and no limit after which records go unchecked;
3. checkpoints: the RFC 9162 root of the first N leaf hashes equals each signed
   checkpoint's root, the signature verifies, and the signing key is trusted:
   given by the caller, or introduced by a ``key_rotated`` record that a trusted
   key signed; and the newest checkpoint covers every record. The writer commits
   each batch in one transaction with its checkpoint, so a record no checkpoint
   covers means checkpoints were deleted (``unsigned``), crash or not.

A log with no record fails too (``nothing_signed``): the writer signs nothing
until its first record, so a never-written log and one whose records and
checkpoints were all deleted look the same, and nothing in either is vouched for.

Where the log keeps ``audit_facts`` (the reports' columns, facts.py), every value is
computed again from its record's payload; a row that differs, is missing or is extra
is ``modified`` at its seq.

A record that was changed *and* had its leaf hash recomputed passes check 2 and
is caught by check 3, which can only say between which checkpoints it lies.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import duckdb

from .canonical import CanonicalJSONError, is_canonical
from .errors import AuditError
from .facts import behind, first_mismatch, has_facts
from .keys import PublicKey
from .log import Checkpoint, leaf_bytes
from .merkle import CompactTree, MerkleTree, leaf_hash, verify_consistency
from ..store.files import open_duckdb
from .sql import q

KINDS = (
    "deleted",
    "reordered",
    "modified",
    "truncated",
    "forged_signature",
    "unknown_key",
    "revoked_key",
    "anchor_not_contained",
    "unsigned",
    "nothing_signed",
)
NOTHING_SIGNED = ("no checkpoint covers any record (the log holds none); an empty log and one whose records "
                  "and checkpoints were all removed look the same, so there is nothing to vouch for")
_CHUNK = 50_000
_CLASSIFY = 1000  # mismatched rows kept after the first one, only to tell a move from a change


@dataclass(frozen=True)
class Failure:
    """The first fault found: its kind (one of ``KINDS``), the seq, and a sentence."""

    kind: str
    seq: int
    message: str
    upto: int | None = None  # for a checkpoint failure: the bad record lies in seq..upto

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind.replace('_', ' ')}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """What ``audit verify`` prints: counts, keys, time, and the failure if any."""

    source: str
    origin: str | None
    records: int
    checkpoints: int
    keys: tuple[str, ...]
    seconds: float
    unsigned: int
    anchored: int | None = None
    failure: Failure | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        if self.failure:
            return f"{self.source}: FAILED at {self.failure}"
        parts = [
            f"{self.source}: OK",
            f"{self.records} records",
            f"{self.checkpoints} checkpoints",
            f"{len(self.keys)} key{'s' if len(self.keys) != 1 else ''} ({', '.join(self.keys) or 'none'})",
        ]
        if self.anchored is not None:
            parts.append(f"anchor at {self.anchored} contained")
        parts.append(f"{self.seconds:.2f} s")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "origin": self.origin,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "keys": list(self.keys),
            "seconds": round(self.seconds, 3),
            "unsigned": self.unsigned,
            "anchored": self.anchored,
            "notes": list(self.notes),
            "failure": None
            if self.failure is None
            else {"kind": self.failure.kind, "seq": self.failure.seq, "message": self.failure.message},
        }


def exact_leaf(row: Sequence[Any], seq: int | None = None) -> bytes | None:
    """Leaf hash of a ``record_columns`` row by the spec (None if it cannot be encoded).

    ``seq`` overrides the row's own seq, to recognise a record moved to another seq.
    """
    row_seq, ts, origin, event, actor, workflow, run_id, payload, policy_hash, key_id, _ = row
    if not isinstance(payload, str) or not is_canonical(payload):
        return None  # payloads are stored canonical; any other text was edited
    try:
        data = leaf_bytes(
            seq=row_seq if seq is None else seq, ts=ts, origin=origin, event=event, actor=actor,
            workflow=workflow, run_id=run_id, payload=payload, policy_hash=policy_hash, key_id=key_id,
        )
    except (CanonicalJSONError, TypeError):
        return None
    return leaf_hash(data)


def _hex(value: Any) -> bytes:
    """The bytes of a stored hash, only in the form the writer stores (lower-case hex, nothing else):
    ``bytes.fromhex`` alone also reads upper case and spaces, so an edited column would still match."""
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        return b""
    return raw if raw.hex() == value else b""


def _base64(value: Any) -> bytes:
    """The bytes of a stored signature, only in the form the writer stores (padded standard base64, nothing
    else): ``b64decode`` alone skips characters outside the alphabet, so an edited column would still match."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (TypeError, ValueError):
        return b""
    return raw if base64.b64encode(raw).decode("ascii") == value else b""


def _stored_checkpoint(row: Sequence[Any]) -> Checkpoint:
    """A checkpoint row with its root and signature read only as the writer writes them: one spelled
    otherwise (upper case, spaces, stray characters) has no root or signature, so it fails as forged."""
    origin, size, root, ts, key_id, signature = row
    return Checkpoint(origin, int(size), _hex(root), ts, key_id, _base64(signature))


Columns = dict[str, dict[str, tuple[str, bool]]]  # table -> column -> (type, nullable)
_QUOTED = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'')
_COLLATE = re.compile(r"\bCOLLATE\s+\w+", re.IGNORECASE)


@cache
def _format_columns() -> Columns:
    """The audit tables' columns as the writer creates them (``create_schema``, run on a scratch database)."""
    scratch = open_duckdb(":memory:")
    try:
        scratch.execute(q("create_schema"))
        return _columns(scratch)
    finally:
        scratch.close()


def _columns(con: duckdb.DuckDBPyConnection) -> Columns:
    found: Columns = {}
    for table, column, kind, nullable in con.execute(q("audit_columns")).fetchall():
        found.setdefault(table, {})[column] = (kind, nullable)
    return found


def _format_problem(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why the audit tables are not laid out as the writer lays them out: a column added (unsigned values
    beside signed ones), dropped or retyped, a NULL where the writer never writes one; ``audit_meta``
    without exactly one row of format 1. Column order and a missing ``NOT NULL`` (a snapshot's tables are
    copies without constraints) are not changes."""
    expected = _format_columns()
    for table, columns in sorted(_columns(con).items()):
        want = expected[table]
        for name, (kind, _) in columns.items():
            if name not in want:
                return (f"{table} was altered: column {name} {kind} is not in the log's format "
                        "(values beside the signed ones)")
            if kind != want[name][0]:
                return f"{table} was altered: column {name} is {kind} where the log's format has {want[name][0]}"
        for name in want:
            if name not in columns:
                return f"{table} was altered: column {name} is missing"
        required = [name for name, (_, nullable) in want.items() if not nullable and columns[name][1]]
        if required:  # the writer's own table and column names, never the file's text
            nulls = " OR ".join(f"{name} IS NULL" for name in required)
            count = con.execute(f"SELECT count(*) FROM {table} WHERE {nulls}").fetchone()[0]
            if count:
                return f"{table} has {count} row(s) with NULL in {', '.join(required)}, which the writer never writes"
    for table, text in con.execute(q("audit_table_sql")).fetchall():
        bare = _QUOTED.sub("", text or "")  # identifiers and literals may hold any word
        if (found := _COLLATE.search(bare)) is not None:
            return (f"{table} was altered: a column is declared {found.group(0)}, which the writer never sets "
                    "(queries and reports would compare its values otherwise than they were signed)")
    rows, low, high = con.execute(q("meta_rows")).fetchone()
    if rows != 1:
        return f"audit_meta has {rows} rows; a log has exactly one"
    if low != 1 or high != 1:
        return f"audit_meta says leaf format {low}; this version reads format 1"
    return None


def verify_connection(
    con: duckdb.DuckDBPyConnection,
    source: str,
    trusted: Sequence[PublicKey],
    *,
    anchor: Checkpoint | None = None,
) -> VerifyReport:
    """Verify the audit tables reachable through ``con`` (read-only use)."""
    if not trusted:
        raise AuditError("no trusted public key: pass --pubkey PEM (the key the log was first signed with)")
    started = time.perf_counter()
    try:
        tables = {r[0] for r in con.execute(q("tables")).fetchall()}
        if not {"audit_log", "audit_checkpoints"} <= tables:
            raise AuditError(f"{source}: has no audit_log/audit_checkpoints tables; not a policyengine audit log")
        if "audit_meta" not in tables:  # the writer creates all three; without it the format goes unchecked
            raise AuditError(f"{source}: has no audit_meta table, which the writer always creates with audit_log "
                             "(dropped: the tables' format cannot be checked)")
        problem = _format_problem(con)
        if problem is not None:
            raise AuditError(f"{source}: {problem}")
        meta = con.execute(q("read_meta")).fetchone()
        failures: list[Failure] = []
        failures += _sequence_failures(con)
        failures += _leaf_failures(con)
        failures += _facts_failures(con)
        notes = _facts_notes(con)
        leaves = [_hex(r[0]) for r in con.execute(q("leaf_hashes")).fetchall()]
        checkpoints = [_stored_checkpoint(r) for r in con.execute(q("checkpoints")).fetchall()]
        rotations = con.execute(q("rotations")).fetchall()
        record_keys = con.execute(q("record_keys")).fetchall()
        sizes = sorted({c.tree_size for c in checkpoints if 0 < c.tree_size <= len(leaves)})
        key_at = dict(con.execute(q("keys_at"), {"seqs": sizes}).fetchall()) if sizes else {}
    except duckdb.Error as err:
        raise AuditError(f"{source}: cannot read the audit tables ({str(err).splitlines()[0]})") from None
    except (ValueError, TypeError) as err:
        raise AuditError(f"{source}: malformed audit table ({err})") from None
    origin = meta[0] if meta else (checkpoints[0].origin if checkpoints else None)
    keys = {k.key_id: k for k in trusted}
    chain = _ChainWalk(keys, rotations, origin)
    signed_size, failures_cp = chain.walk(leaves, checkpoints, key_at)
    failures += failures_cp
    anchored = None
    if anchor is not None:
        failures += _anchor_failures(anchor, leaves, chain.trusted, origin, chain.revoked)
        anchored = anchor.tree_size
    unsigned = len(leaves) - signed_size
    if unsigned and not failures_cp:
        failures.append(Failure(
            "unsigned", signed_size + 1,
            f"records {signed_size + 1}..{len(leaves)} are not covered by any signed checkpoint "
            "(the writer commits every record with one, so records were added or checkpoints deleted)"))
    if not leaves and not failures:
        failures.append(Failure("nothing_signed", 1, NOTHING_SIGNED))
    # A precise failure inside a checkpoint's range explains it better than the range does.
    first = min(failures, key=lambda f: (f.upto or f.seq, KINDS.index(f.kind))) if failures else None
    return VerifyReport(
        source=source,
        origin=origin,
        records=len(leaves),
        checkpoints=len(checkpoints),
        keys=tuple(k for k, _ in record_keys),
        seconds=time.perf_counter() - started,
        unsigned=unsigned,
        anchored=anchored,
        failure=first,
        notes=notes,
    )


def _sequence_failures(con: duckdb.DuckDBPyConnection) -> list[Failure]:
    row = con.execute(q("sequence_breaks")).fetchone()
    if row is None:
        return []
    seq, pos, prev = row
    if prev is not None and seq == prev:
        return [Failure("reordered", pos, f"seq {seq} appears more than once")]
    if seq > pos:
        missing = f"{pos}" if seq == pos + 1 else f"{pos}..{seq - 1}"
        return [Failure("deleted", pos, f"record {missing} is missing (gap before seq {seq})")]
    return [Failure("reordered", pos, f"found seq {seq} where {pos} was expected")]


def _leaf_failures(con: duckdb.DuckDBPyConnection) -> list[Failure]:
    """Re-hash every record and compare with its stored leaf hash; the first mismatch fails.

    Every record is checked. The rows kept after the first mismatch (at most
    ``_CLASSIFY``) only decide whether it was moved or changed: the failure is
    reported either way.
    """
    mismatched: list[tuple[Any, ...]] = []
    result = con.execute(q("all_records"))
    while True:
        rows = result.fetchmany(_CHUNK)
        if not rows:
            break
        for row in rows:
            if exact_leaf(row) != _hex(row[-1]):
                mismatched.append(row)
                if len(mismatched) > _CLASSIFY:
                    break
        if len(mismatched) > _CLASSIFY:
            break
    if not mismatched:
        return []
    row = mismatched[0]
    seq, stored = row[0], _hex(row[-1])
    for other in sorted({r[0] for r in mismatched}):
        if other != seq and exact_leaf(row, seq=other) == stored:
            return [_moved(seq, other, mismatched)]
    return [Failure("modified", seq, "its columns do not match its leaf hash")]


def _facts_notes(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    missing = behind(con) if has_facts(con) else 0
    if not missing:
        return ()
    return (f"the last {missing} model_call record(s) have no audit_facts row yet (their writer stopped before "
            "writing them; reports read their payloads, and the next writer to open the log fills them in)",)


def _facts_failures(con: duckdb.DuckDBPyConnection) -> list[Failure]:
    """Every ``audit_facts`` value computed again from its record's payload (a log without the table has none)."""
    if not has_facts(con):
        return []
    seq = first_mismatch(con)
    if seq is None:
        return []
    return [Failure("modified", seq, "its audit_facts row does not match its payload "
                                     "(the reports' columns are derived from the signed payload)")]


def _moved(seq: int, written_as: int, rows: list[tuple[Any, ...]]) -> Failure:
    """Seq ``seq`` holds the record written as ``written_as``: a swap, or a deletion hidden by renumbering."""
    original_elsewhere = any(r[0] != seq and exact_leaf(r, seq=seq) == _hex(r[-1]) for r in rows)
    if written_as > seq and not original_elsewhere:
        return Failure("deleted", seq, f"record {seq} is missing; the records after it were renumbered")
    return Failure("reordered", seq, f"seq {seq} holds the record written as seq {written_as}")


class _ChainWalk:
    """Walks checkpoints in tree order, trusting rotated-in keys once an old key signs them."""

    def __init__(self, trusted: dict[str, PublicKey], rotations: list[tuple[Any, ...]], origin: str | None):
        self.trusted = dict(trusted)
        self.rotations = list(rotations)
        self.origin = origin
        self.revoked_at = revocations(rotations)

    def revoked(self, key_id: str, tree_size: int) -> int | None:
        """The seq of the rotation record that retired ``key_id``, if it lies below ``tree_size``."""
        at = self.revoked_at.get(key_id)
        return at if at is not None and at < tree_size else None

    def walk(
        self, leaves: list[bytes], checkpoints: list[Checkpoint], key_at: dict[int, str]
    ) -> tuple[int, list[Failure]]:
        tree = CompactTree()
        verified = 0
        for cp in checkpoints:
            first = verified + 1
            where = f"checkpoint at tree size {cp.tree_size}"
            if cp.tree_size > len(leaves):
                return verified, [Failure("truncated", len(leaves) + 1,
                                          f"{where} covers {cp.tree_size} records but only {len(leaves)} remain")]
            while tree.size < cp.tree_size:
                tree.append(leaves[tree.size])
            tree_root = tree.root()
            retired = self.revoked(cp.key_id, cp.tree_size)
            if retired is not None:
                return verified, [Failure("revoked_key", max(first, retired + 1),
                                          f"{where} is signed by key {cp.key_id}, rotated away at seq {retired}; "
                                          "a rotated-away key signs nothing after its rotation record", cp.tree_size)]
            key = self.trusted.get(cp.key_id)
            if key is None:
                return verified, [Failure("unknown_key", first, f"{where} is signed by untrusted key {cp.key_id}", cp.tree_size)]
            if cp.origin != self.origin or not key.verify(cp.signature, cp.note()):
                return verified, [Failure("forged_signature", first, f"{where} has an invalid signature", cp.tree_size)]
            if tree_root != cp.root:
                return verified, [Failure("modified", first,
                                          f"records {first}..{cp.tree_size} do not hash to the root signed in {where}", cp.tree_size)]
            if cp.tree_size and key_at.get(cp.tree_size) != cp.key_id:
                return verified, [Failure("unknown_key", first,
                                          f"{where} is signed by key {cp.key_id} but record {cp.tree_size} "
                                          f"belongs to key {key_at.get(cp.tree_size)}", cp.tree_size)]
            verified = max(verified, cp.tree_size)
            failure = self._apply_rotations(verified)
            if failure:
                return verified, [failure]
        return verified, []

    def _apply_rotations(self, upto: int) -> Failure | None:
        while self.rotations and self.rotations[0][0] <= upto:
            seq, record_key, payload = self.rotations.pop(0)
            try:
                body = json.loads(payload)
                old, new = body["old_key_id"], body["new_key_id"]
                public = PublicKey.from_pem(body["new_public_key"])
            except (ValueError, KeyError, TypeError, AuditError):
                return Failure("modified", seq, "key_rotated record is malformed")
            if old != record_key or old not in self.trusted or public.key_id != new:
                return Failure("unknown_key", seq, f"key_rotated record does not chain from a trusted key ({old})")
            self.trusted[new] = public
        return None


def retired_at(con: duckdb.DuckDBPyConnection, key_id: str) -> int | None:
    """The seq of the record that rotated ``key_id`` away in the log on ``con`` (None: it never was)."""
    return revocations(con.execute(q("rotations")).fetchall()).get(key_id)


def revocations(rotations: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """Key id -> seq of the first ``key_rotated`` record that rotated it away (it may sign nothing after it).

    Read from the records themselves, trusted or not: a rotation record in the
    log retires its old key even if the rest of the chain fails to verify.
    """
    retired: dict[str, int] = {}
    for seq, record_key, payload in rotations:
        try:
            old = json.loads(payload).get("old_key_id")
        except (ValueError, TypeError, AttributeError):
            old = None
        for key_id in {record_key, old} - {None}:
            if isinstance(key_id, str):
                retired.setdefault(key_id, seq)
    return retired


def _anchor_failures(
    anchor: Checkpoint, leaves: list[bytes], trusted: dict[str, PublicKey], origin: str | None,
    revoked: Any = lambda key_id, size: None,
) -> list[Failure]:
    where = f"anchor at tree size {anchor.tree_size}"
    retired = revoked(anchor.key_id, anchor.tree_size)
    if retired is not None:
        return [Failure("revoked_key", retired + 1,
                        f"{where} is signed by key {anchor.key_id}, rotated away at seq {retired}")]
    key = trusted.get(anchor.key_id)
    if key is None:
        return [Failure("unknown_key", anchor.tree_size, f"{where} is signed by untrusted key {anchor.key_id}")]
    if not key.verify(anchor.signature, anchor.note()):
        return [Failure("forged_signature", anchor.tree_size, f"{where} has an invalid signature")]
    if anchor.origin != origin:
        return [Failure("anchor_not_contained", 1, f"{where} is for log {anchor.origin!r}, not {origin!r}")]
    if anchor.tree_size > len(leaves):
        return [Failure("anchor_not_contained", len(leaves) + 1,
                        f"{where} covers {anchor.tree_size} records but the log now has {len(leaves)}")]
    tree = MerkleTree(leaves)
    proof = tree.consistency_proof(anchor.tree_size)
    if not verify_consistency(anchor.tree_size, tree.size, anchor.root, tree.root(), proof):
        return [Failure("anchor_not_contained", anchor.tree_size,
                        f"records 1..{anchor.tree_size} no longer hash to the anchored root")]
    return []
