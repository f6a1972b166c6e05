"""Ed25519 signing keys for checkpoints, identified by a fingerprint.

A key id is the first 16 bytes (32 hex digits) of SHA-256 over the raw 32-byte
public key, so anyone holding the public key can recompute it. Private keys are
PKCS#8 PEM files written with mode 0600; the public key sits beside them as
``KEYFILE.pub.pem`` (SubjectPublicKeyInfo PEM).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..store.files import DEFAULT_KEY_PATH as DEFAULT_KEY_PATH  # the one default path (re-exported)
from .errors import AuditError


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


def _write_new(directory: Path, prefix: str, data: bytes, mode: int = 0o600) -> Path:
    """Write ``data`` to a new temp file in ``directory`` (O_EXCL, O_NOFOLLOW, ``mode``), synced; removed on failure.

    A new name every time: a file or symlink planted at a fixed temp name is never written through."""
    for _ in range(100):
        tmp = directory / f".{prefix}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
    raise FileExistsError(f"{directory}: cannot find a free temporary name")


def _stale(path: Path) -> bool:
    """An empty regular file where a key should be: the leftover of a crash or a full disk, not a key."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def generate_key(path: str | os.PathLike[str], *, overwrite: bool = False, exist_ok: bool = False) -> SigningKey:
    """Create a new key at ``path`` (mode 0600) and its ``.pub.pem`` beside it, atomically.

    Both halves are written to temp files in the same folder (O_EXCL, no symlink
    followed) and put in place only when complete: a full disk or a crash never
    leaves a partial key, and a symlink at either path is replaced, never written
    through. The private key is published with ``link`` (fails if the path
    exists), so of two processes creating the same key one wins; with
    ``exist_ok`` the other loads the winner's key instead of failing. An empty
    file at ``path`` (left by an older version on a full disk) is replaced.
    """
    path = Path(path)
    key = SigningKey.from_key(Ed25519PrivateKey.generate())
    pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory = path.parent
    try:
        private_tmp = _write_new(directory, path.name, pem)
    except OSError as err:
        raise AuditError(f"{path}: cannot create key file ({err.strerror or err})") from None
    try:
        if overwrite or _stale(path):
            os.replace(private_tmp, path)
        else:
            try:
                os.link(private_tmp, path, follow_symlinks=False)
            except FileExistsError:
                if exist_ok:
                    return load_private_key(path)
                raise AuditError(f"{path}: already exists; refusing to overwrite a signing key") from None
        public_tmp = _write_new(directory, public_key_path(path).name, key.public.pem.encode("ascii"))
        os.chmod(public_tmp, 0o644)
        os.replace(public_tmp, public_key_path(path))
    except OSError as err:
        raise AuditError(f"{path}: cannot create key file ({err.strerror or err})") from None
    finally:
        private_tmp.unlink(missing_ok=True)
    return key


_MAX_KEY_BYTES = 64 * 1024  # a PEM key is a few hundred bytes


def _read_key_file(path: str | os.PathLike[str], what: str) -> tuple[bytes, int]:
    """The bytes and mode of a key file, refused unread unless it is a regular file (a FIFO at the path would
    hold ``serve``, ``keys rotate`` or ``audit verify`` for ever, a device feed it endless bytes). Opened
    without blocking and checked on the open descriptor, so what is checked is what is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise AuditError(f"{path}: cannot read {what} ({err.strerror})") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise AuditError(f"{path}: not a regular file; refusing it as a {what}")
        try:
            data = handle.read(_MAX_KEY_BYTES + 1) or b""
        except OSError as err:
            raise AuditError(f"{path}: cannot read {what} ({err.strerror})") from None
    if len(data) > _MAX_KEY_BYTES:
        raise AuditError(f"{path}: larger than {_MAX_KEY_BYTES} bytes; not a {what}")
    return data, mode


def load_private_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a PKCS#8 PEM Ed25519 private key written by ``generate_key``; warn if others may read it."""
    data, mode = _read_key_file(path, "signing key")
    if mode & 0o077 and os.name == "posix":
        sys.stderr.write(f"warning: {path}: signing key is readable by other users (mode {stat.S_IMODE(mode):04o}); "
                         f"restrict it with `chmod 600 {path}`\n")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuditError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an Ed25519 private key")
    return SigningKey.from_key(key)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Read a public key PEM (or take the public half of a private key PEM)."""
    data, _ = _read_key_file(path, "public key")
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:  # PEM readers take the first block and skip the rest: say so rather than trust one silently
        raise AuditError(f"{path}: holds {blocks} PEM blocks; give each trusted key its own --pubkey")
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public
    return PublicKey.from_pem(data, where=str(path))
