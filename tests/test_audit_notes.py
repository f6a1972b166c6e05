"""Checkpoints as C2SP signed notes, checked by a verifier written here from the specs, not the project's code.

c2sp.org/signed-note: a note is text lines, a blank line, and signature lines
``— <name> <base64(4-byte key hash || signature)>``; a verifier key is
``<name>+<hex key hash>+<base64(0x01 || Ed25519 public key)>`` and the key
hash is SHA-256(name || "\\n" || 0x01 || public key)[:4]. c2sp.org/tlog-checkpoint:
the body is origin, tree size, base64 RFC 6962 root hash, then extension lines.
Signatures are checked with libsodium (PyNaCl), roots with an RFC 6962 tree written here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from policyengine.audit import AuditLog, generate_key
from policyengine.audit.keys import public_key_path


class NoteError(Exception):
    pass


def parse_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    name, _, rest = vkey.partition("+")  # the base64 key may itself contain "+"
    hash_hex, _, key_b64 = rest.partition("+")
    key = base64.b64decode(key_b64, validate=True)
    if key[0] != 0x01 or len(key) != 33:
        raise NoteError("not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + key).digest()[:4] != bytes.fromhex(hash_hex):
        raise NoteError("key hash does not match")
    return name, bytes.fromhex(hash_hex), key[1:]


def open_note(note: str, vkey: str) -> str:
    """The verified note text, or NoteError (signed-note: verify with the one known key)."""
    name, khash, public = parse_vkey(vkey)
    if not note.endswith("\n") or "\n\n" not in note:
        raise NoteError("malformed note")
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    for line in signatures.splitlines():
        dash, sig_name, sig_b64 = line.split(" ")
        if dash != "\u2014":
            raise NoteError("signature line must start with an em dash")
        blob = base64.b64decode(sig_b64, validate=True)
        if sig_name == name and blob[:4] == khash:
            try:
                VerifyKey(public).verify(text.encode(), blob[4:])
            except BadSignatureError:
                raise NoteError("invalid signature") from None
            return text
    raise NoteError("no signature by the known key")


def rfc6962_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def _exe() -> list[str]:
    found = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "policyengine"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_exe(), *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture
def log(tmp_path: Path):
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "audit.duckdb"
    with AuditLog(db, key, flush_interval=0, origin="example.com/audit/ap") as writer:
        for i in range(13):
            writer.append("decision", actor=f"u{i}", payload={"i": i})
    return db, key


def test_a_checkpoint_note_verifies_with_an_independent_verifier(log, tmp_path: Path) -> None:
    db, key = log
    pub = str(public_key_path(tmp_path / "k.key"))
    vkey = cli("keys", "vkey", "--pubkey", pub, "--db", str(db), cwd=tmp_path)
    assert vkey.returncode == 0, vkey.stderr
    note = cli("audit", "checkpoint", "--format", "note", "--db", str(db), "--pubkey", pub, cwd=tmp_path)
    assert note.returncode == 0, note.stderr
    text = open_note(note.stdout, vkey.stdout.strip())
    origin, size, root_b64, *extensions = text.splitlines()
    con = duckdb.connect(str(db), read_only=True)
    leaves = [bytes.fromhex(r[0]) for r in con.execute("SELECT leaf_hash FROM audit_log ORDER BY seq").fetchall()]
    con.close()
    assert origin == "example.com/audit/ap" and vkey.stdout.startswith(origin + "+")
    assert int(size) == len(leaves) == 13
    assert base64.b64decode(root_b64) == rfc6962_root(leaves)
    assert len(extensions) == 1  # the signing time, an extension line


@pytest.mark.parametrize("change", ["size", "root", "origin", "signature", "other key"])
def test_a_changed_note_is_refused_by_the_independent_verifier(log, tmp_path: Path, change: str) -> None:
    from policyengine.audit.notes import signed_note, verifier_key
    from policyengine.audit.proofs import latest_checkpoint

    db, key = log
    checkpoint = latest_checkpoint(db)
    note, vkey = signed_note(checkpoint, key.public), verifier_key(checkpoint.origin, key.public)
    assert open_note(note, vkey)
    body, sig_line = note.split("\n\n")
    if change == "size":
        note = note.replace("\n13\n", "\n14\n", 1)
    elif change == "root":
        lines = body.split("\n")
        lines[2] = base64.b64encode(bytes(32)).decode()
        note = "\n".join(lines) + "\n\n" + sig_line
    elif change == "origin":
        note = note.replace("example.com/audit/ap\n", "example.com/audit/other\n", 1)
    elif change == "signature":
        dash, name, blob = sig_line.strip().split(" ")
        raw = bytearray(base64.b64decode(blob))
        raw[10] ^= 1
        note = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    else:
        vkey = verifier_key(checkpoint.origin, generate_key(tmp_path / "other.key").public)
    with pytest.raises(NoteError):
        open_note(note, vkey)


# --- proofs: c2sp.org/tlog-proof and RFC 9162 consistency, checked with algorithms written here -------------


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc9162_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def rfc9162_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if m == n:
        return not proof and old_root == new_root
    if m & (m - 1) == 0:
        proof = [old_root, *proof]
    if not proof:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


def _leaves(db: Path) -> list[bytes]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [bytes.fromhex(r[0]) for r in con.execute("SELECT leaf_hash FROM audit_log ORDER BY seq").fetchall()]
    finally:
        con.close()


@pytest.mark.parametrize("seq", [1, 7, 13])
def test_a_tlog_proof_verifies_independently(log, tmp_path: Path, seq: int) -> None:
    db, key = log
    pub = str(public_key_path(tmp_path / "k.key"))
    done = cli("audit", "prove", str(seq), "--format", "tlog-proof", "--db", str(db), "--pubkey", pub, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    vkey = cli("keys", "vkey", "--pubkey", pub, "--db", str(db), cwd=tmp_path).stdout.strip()
    head, _, note = done.stdout.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ") and lines[2] == f"index {seq - 1}"
    record = base64.b64decode(lines[1].removeprefix("extra "))
    import json

    assert json.loads(record)["seq"] == seq  # the extra data is the record's canonical JSON
    path = [base64.b64decode(h) for h in lines[3:]]
    origin, size, root_b64, *_ = open_note(note, vkey).splitlines()
    leaf = hashlib.sha256(b"\x00" + record).digest()
    assert rfc9162_inclusion(seq - 1, int(size), leaf, path, base64.b64decode(root_b64))
    assert not rfc9162_inclusion(seq % 13, int(size), leaf, path, base64.b64decode(root_b64))  # another index


@pytest.mark.parametrize("old_size", [1, 2, 4, 5, 8, 12, 13])
def test_a_consistency_proof_from_any_earlier_size_verifies_independently(log, tmp_path: Path, old_size: int) -> None:
    import json

    db, key = log
    done = cli("audit", "prove", "--consistency", str(old_size), "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    proof = json.loads(done.stdout)
    leaves = _leaves(db)
    old_root, new_root = rfc6962_root(leaves[:old_size]), rfc6962_root(leaves)
    assert base64.b64decode(proof["old_root"]) == old_root
    assert bytes.fromhex(proof["checkpoint"]["root"]) == new_root and proof["checkpoint"]["tree_size"] == 13
    hashes = [base64.b64decode(h) for h in proof["proof"]]
    assert rfc9162_consistency(old_size, 13, old_root, new_root, hashes)
    if old_size < 13:
        assert not rfc9162_consistency(old_size, 13, hashlib.sha256(b"other").digest(), new_root, hashes)


def test_prove_needs_exactly_one_of_seq_and_consistency(log, tmp_path: Path) -> None:
    db, _ = log
    for args in ((), ("3", "--consistency", "2")):
        done = cli("audit", "prove", *args, "--db", str(db), cwd=tmp_path)
        assert done.returncode != 0 and "either SEQ" in done.stderr and "Traceback" not in done.stderr
    done = cli("audit", "prove", "--consistency", "99", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 1 and "not within the latest checkpoint" in done.stderr


# --- tiles: c2sp.org/tlog-tiles, read back as a monitor would ------------------------------------------------


@pytest.mark.parametrize(("n", "path"), [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"),
                                         (1234067, "x001/x234/067")])
def test_tile_indexes_are_written_in_groups_of_three(n: int, path: str) -> None:
    from policyengine.audit.tiles import tile_index

    assert tile_index(n) == path


PLANTED = {  # a link left in the published folder at the name the tile writer used for its temp files
    "checkpoint.tmp -> the audit log": ("checkpoint.tmp", "audit.duckdb"),
    "checkpoint.tmp -> the signing key": ("checkpoint.tmp", "k.key"),
    "an entries tile's .tmp -> the audit log": ("tile/entries/000.p/13.tmp", "audit.duckdb"),
}


@pytest.mark.parametrize("case", PLANTED)
def test_a_link_planted_among_the_tiles_never_leads_the_export_to_the_log_or_key(log, tmp_path: Path, case: str) -> None:
    """Each tile went through '<name>.tmp' with a plain write, which follows a symlink: one planted in the
    folder (often one a web server publishes) made the export write over the audit log or the signing key."""
    db, key = log
    planted, target = PLANTED[case]
    out = tmp_path / "public"
    (out / planted).parent.mkdir(parents=True)
    (out / planted).symlink_to(tmp_path / target)
    before = (tmp_path / target).read_bytes()
    done = cli("audit", "export", "--tiles", str(out), "--db", str(db), "--pubkey", str(public_key_path(tmp_path / "k.key")),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / target).read_bytes() == before
    assert (out / "checkpoint").read_text(encoding="utf-8").startswith("example.com/audit/ap\n13\n")
    verified = cli("audit", "verify", "--db", str(db), "--pubkey", str(public_key_path(tmp_path / "k.key")), cwd=tmp_path)
    assert verified.returncode == 0 and "OK, 13 records" in verified.stdout, verified.stderr


def test_tiles_serve_the_log_to_an_independent_monitor(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "audit.duckdb"
    size = 2 * 256 + 88
    with AuditLog(db, key, flush_interval=0, origin="example.com/audit/tiles") as writer:
        for i in range(size):
            writer.append("decision", actor=f"u{i}", payload={"i": i})
    pub = str(public_key_path(tmp_path / "k.key"))
    out = tmp_path / "public"
    done = cli("audit", "export", "--tiles", str(out), "--db", str(db), "--pubkey", pub, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    vkey = cli("keys", "vkey", "--pubkey", pub, "--db", str(db), cwd=tmp_path).stdout.strip()
    origin, tree_size, root_b64, *_ = open_note((out / "checkpoint").read_text(encoding="utf-8"), vkey).splitlines()
    assert int(tree_size) == size
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["checkpoint", "tile/0/000", "tile/0/001", "tile/0/002.p/88", "tile/1/000.p/2",
                     "tile/entries/000", "tile/entries/001", "tile/entries/002.p/88"]

    def hashes(name: str) -> list[bytes]:
        data = (out / name).read_bytes()
        return [data[i:i + 32] for i in range(0, len(data), 32)]

    level0 = hashes("tile/0/000") + hashes("tile/0/001") + hashes("tile/0/002.p/88")
    assert level0 == _leaves(db)
    assert rfc6962_root(level0) == base64.b64decode(root_b64)
    assert hashes("tile/1/000.p/2") == [rfc6962_root(level0[:256]), rfc6962_root(level0[256:512])]
    entries: list[bytes] = []
    for name in ("tile/entries/000", "tile/entries/001", "tile/entries/002.p/88"):
        data, at = (out / name).read_bytes(), 0
        while at < len(data):
            length = int.from_bytes(data[at:at + 2], "big")
            entries.append(data[at + 2:at + 2 + length])
            at += 2 + length
    assert [hashlib.sha256(b"\x00" + e).digest() for e in entries] == level0
