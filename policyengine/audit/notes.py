"""Checkpoints as C2SP signed notes, for witnesses and monitors that speak the standard.

A checkpoint's signed bytes are already a c2sp.org/tlog-checkpoint body
(origin, tree size, base64 root, then one extension line: the time), so the
note is that body, a blank line, and one signature line
``— <name> base64(key hash || Ed25519 signature)`` (c2sp.org/signed-note).
The key hash is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public
key); a verifier key string is ``<name>+<hex key hash>+base64(0x01 || public key)``.
The signature is the one stored with the checkpoint: nothing is re-signed.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization

from .errors import AuditError
from .keys import PublicKey
from .log import Checkpoint

ED25519 = b"\x01"  # signed-note signature type of Ed25519
EM_DASH = "\u2014"


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise AuditError(f"key name {name!r} must be non-empty, without spaces or '+' (c2sp.org/signed-note)")
    return name


def _key_data(public: PublicKey) -> bytes:
    return ED25519 + public.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, public: PublicKey) -> bytes:
    """The 4-byte key hash that names ``public`` in a signature line."""
    return hashlib.sha256(_check_name(name).encode("utf-8") + b"\n" + _key_data(public)).digest()[:4]


def verifier_key(name: str, public: PublicKey) -> str:
    """The verifier key string (``keys vkey``) witnesses and monitors are configured with."""
    return f"{_check_name(name)}+{key_hash(name, public).hex()}+{base64.b64encode(_key_data(public)).decode('ascii')}"


def signed_note(checkpoint: Checkpoint, public: PublicKey, name: str | None = None) -> str:
    """The checkpoint as a C2SP signed note; ``name`` defaults to the log's origin."""
    if public.key_id != checkpoint.key_id:
        raise AuditError(f"checkpoint at tree size {checkpoint.tree_size} is signed by key {checkpoint.key_id}, "
                         f"not {public.key_id}; pass that key's --pubkey")
    if not public.verify(checkpoint.signature, checkpoint.note()):
        raise AuditError(f"checkpoint at tree size {checkpoint.tree_size}: signature does not verify")
    name = name or checkpoint.origin
    signature = base64.b64encode(key_hash(name, public) + checkpoint.signature).decode("ascii")
    return f"{checkpoint.note().decode('utf-8')}\n{EM_DASH} {name} {signature}\n"
