"""Ed25519 signing keys for checkpoints, identified by a fingerprint.

A key id is the first 16 bytes (32 hex digits) of SHA-256 over the raw 32-byte
public key, so anyone holding the public key can recompute it. Private keys are
PKCS#8 PEM files written with mode 0600; the public key sits beside them as
``KEYFILE.pub.pem`` (SubjectPublicKeyInfo PEM).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import AuditError

DEFAULT_KEY_PATH = Path("policyengine.key")


def public_key_path(private_path: str | os.PathLike[str]) -> Path:
    """Where ``keys generate`` puts the public half of ``private_path``."""
    return Path(f"{os.fspath(private_path)}.pub.pem")


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class PublicKey:
    """A verifying key and its id; ``pem`` is what rotation records carry."""

    key_id: str
    pem: str
    key: Ed25519PublicKey = field(repr=False, compare=False)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_key(cls, key: Ed25519PublicKey) -> PublicKey:
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(fingerprint(key), pem.decode("ascii"), key)

    @classmethod
    def from_pem(cls, pem: str | bytes, where: str = "public key") -> PublicKey:
        data = pem.encode("utf-8") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise AuditError(f"{where}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError(f"{where}: not an Ed25519 public key")
        return cls.from_key(key)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its id and public half."""

    public: PublicKey
    key: Ed25519PrivateKey = field(repr=False, compare=False)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    @classmethod
    def from_key(cls, key: Ed25519PrivateKey) -> SigningKey:
        return cls(PublicKey.from_key(key.public_key()), key)


def generate_key(path: str | os.PathLike[str], *, overwrite: bool = False) -> SigningKey:
    """Create a new key at ``path`` (mode 0600) and its ``.pub.pem`` beside it."""
    path = Path(path)
    key = SigningKey.from_key(Ed25519PrivateKey.generate())
    pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise AuditError(f"{path}: already exists; refusing to overwrite a signing key") from None
    except OSError as err:
        raise AuditError(f"{path}: cannot create key file ({err.strerror})") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)
    public_key_path(path).write_text(key.public.pem, encoding="ascii")
    return key


def load_private_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a PKCS#8 PEM Ed25519 private key written by ``generate_key``."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise AuditError(f"{path}: cannot read signing key ({err.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuditError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an Ed25519 private key")
    return SigningKey.from_key(key)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Read a public key PEM (or take the public half of a private key PEM)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise AuditError(f"{path}: cannot read public key ({err.strerror})") from None
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public
    return PublicKey.from_pem(data, where=str(path))
