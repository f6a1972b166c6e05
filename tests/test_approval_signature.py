"""What an approver signs, and what the user directory's ``public_key`` may be (policyengine/approval_signature.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policyengine.approval_signature import STATEMENT_PREFIX, signature_errors, signed, statement
from policyengine.audit.canonical import canonical_bytes
from policyengine.audit.keys import SigningKey
from policyengine.store.directory import FileDirectory

ALICE = SigningKey.from_key(Ed25519PrivateKey.generate())
ENTRY = {"gate": "g", "approver": "alice", "run_id": "r-1", "ts": "2026-12-07T10:00:00Z"}


def test_the_statement_is_a_prefix_line_and_the_canonical_entry_without_its_signature():
    assert STATEMENT_PREFIX == b"policyengine approval v1\n"
    assert statement({**ENTRY, "signature": "x"}) == STATEMENT_PREFIX + canonical_bytes(ENTRY)
    assert ALICE.public.verify(base64.b64decode(signed(ENTRY, ALICE)["signature"]), statement(ENTRY))


# (case, the entry, the errors) for a directory of alice (with a key) and carol (without)
CHANGED = [
    ("signed as given", signed(ENTRY, ALICE), []),
    ("the gate changed", {**signed(ENTRY, ALICE), "gate": "other"}, ["does not verify"]),
    ("the time changed", {**signed(ENTRY, ALICE), "ts": "2026-12-08T10:00:00Z"}, ["does not verify"]),
    ("a binding added", {**signed(ENTRY, ALICE), "request_hash": "sha256:00"}, ["does not verify"]),
    ("the approver written in another case", {**signed(ENTRY, ALICE), "approver": "Alice"}, ["does not verify"]),
    ("roles claimed after signing", {**signed(ENTRY, ALICE), "roles": ["cfo"]}, ["does not verify"]),
    ("unsigned", ENTRY, ["not signed"]),
    ("carol has no key", signed({**ENTRY, "approver": "carol"}, ALICE), ["carol has no public key"]),
    ("a signature of the wrong length", {**ENTRY, "signature": base64.b64encode(b"x" * 63).decode()},
     ["not the base64 of an Ed25519 signature"]),
    ("a signature that is not a string", {**ENTRY, "signature": 7}, ["not the base64 of an Ed25519 signature"]),
    ("an approver with an invisible character", {**ENTRY, "approver": "ali\u200bce"}, ["invisible"]),
    ("a number with no canonical form", {**signed(ENTRY, ALICE), "n": float("nan")}, ["no canonical JSON"]),
]


@pytest.mark.parametrize(("case", "entry", "says"), CHANGED, ids=[c[0] for c in CHANGED])
def test_every_field_of_the_entry_is_signed(case, entry, says):
    errors = signature_errors([entry], {"alice": (), "carol": ()}, {"alice": ALICE.public})
    assert len(errors) == len(says) and all(s in e for s, e in zip(says, errors, strict=True)), errors


# (case, the user's public_key in YAML, the one-line error or None)
KEYS = [
    ("an Ed25519 public key", "ALICE_PEM", None),
    ("no key", None, None),
    ("not PEM", "'hello'", "user 'alice': 'public_key': not a PEM public key"),
    ("not text", "[1, 2]", "user 'alice': 'public_key' must be PEM text"),
]


@pytest.mark.parametrize(("case", "value", "error"), KEYS, ids=[k[0] for k in KEYS])
def test_the_directory_gives_a_user_an_ed25519_public_key(tmp_path: Path, case, value, error):
    text = "users:\n  alice:\n    roles: [senior_analyst]\n"
    if value == "ALICE_PEM":
        text += "    public_key: |\n" + "".join(f"      {line}\n" for line in ALICE.public.pem.splitlines())
    elif value is not None:
        text += f"    public_key: {value}\n"
    (tmp_path / "d.yaml").write_text(text)
    if error is not None:
        with pytest.raises(ValueError, match="^" + str(tmp_path / "d.yaml") + ": " + error.replace("[", r"\[")):
            FileDirectory.load(tmp_path / "d.yaml")
        return
    keys = FileDirectory.load(tmp_path / "d.yaml").public_keys()
    assert {k: v.key_id for k, v in keys.items()} == ({"alice": ALICE.key_id} if value else {})
