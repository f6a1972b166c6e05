"""The user directory: who holds which roles, loaded from a YAML file (``data/directory.yaml`` ships one).

The four-eyes and role checks that use it live in ``orchestrator/approvals.py``
(which re-exports this class as ``Directory``); this module owns where the
directory comes from. It implements the ``Directory`` protocol (``roles()``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .. import yamlfile
from ..identity import IdentityError, canonical_identity


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    roles: tuple[str, ...]
    token_sha256: str | None = None  # SHA-256 (hex) of the user's inbox sign-in token; the token is never stored
    public_key: Any = None  # audit.keys.PublicKey: checks the approvals this user signs (``serve --directory``)


TOKEN_FIELD = "token_sha256"
KEY_FIELD = "public_key"


@dataclass(frozen=True, slots=True)
class FileDirectory:
    """User id -> ``User``, loaded from YAML: ``users: {alice: {name: ..., roles: [...]}}``."""

    users: Mapping[str, User]
    source: str = "<memory>"
    sha256: str | None = None  # of the file's bytes: approvals and ``directory_changed`` events record it
    migrate_policy_roles: tuple[str, ...] = ()  # roles that may decide a run under a policy it did not start with

    @classmethod
    def load(cls, path: str | Path) -> FileDirectory:
        p = Path(path)
        try:
            doc = yamlfile.load(p, "user directory") or {}
            raw_bytes = p.read_bytes()
        except yamlfile.YamlFileError as exc:
            raise ValueError(str(exc)) from None
        except OSError as exc:
            raise ValueError(f"{p}: cannot read user directory: {exc.strerror}") from None
        raw = doc.get("users") if isinstance(doc, dict) else None
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: user directory needs a top-level 'users' mapping")  # noqa: TRY004 - a bad file, not a bad argument
        users: dict[str, User] = {}
        for uid, entry in raw.items():
            entry = entry or {}
            roles = entry.get("roles", []) if isinstance(entry, dict) else None
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ValueError(f"{p}: user {uid!r}: 'roles' must be a list of role names")
            try:
                key = canonical_identity(str(uid), f"user id {uid!r}")
            except IdentityError as exc:
                raise ValueError(f"{p}: {exc}") from None
            if key in users:
                raise ValueError(f"{p}: users {users[key].name!r} and {uid!r} are the same identity {key!r} "
                                 f"(ids are compared case-insensitively after Unicode normalisation)")
            digest = entry.get(TOKEN_FIELD) if isinstance(entry, dict) else None
            if digest is not None and not _is_sha256(digest):
                raise ValueError(f"{p}: user {uid!r}: {TOKEN_FIELD!r} must be 64 lower-case hex digits "
                                 f"(mint one with `policyengine inbox token --user {uid}`)")
            users[key] = User(key, str(entry.get("name", uid)), tuple(roles), digest, _public_key(p, uid, entry))
        migrators = doc.get("migrate_policy_roles") or []
        if not isinstance(migrators, list) or not all(isinstance(r, str) for r in migrators):
            raise ValueError(f"{p}: 'migrate_policy_roles' must be a list of role names")
        return cls(MappingProxyType(users), str(p), hashlib.sha256(raw_bytes).hexdigest(), tuple(migrators))

    def roles(self) -> Mapping[str, tuple[str, ...]]:
        """User id -> roles, the form ``Policy.evaluate(directory=...)`` takes."""
        return MappingProxyType({u.id: u.roles for u in self.users.values()})

    def public_keys(self) -> Mapping[str, Any]:
        """User id -> ``audit.keys.PublicKey``, for the users who have one (they can sign approvals)."""
        return MappingProxyType({u.id: u.public_key for u in self.users.values() if u.public_key is not None})


def _public_key(path: Path, uid: object, entry: object) -> Any:
    """The user's ``public_key`` (Ed25519, PEM text), or None; ``ValueError`` naming the user when it is not one."""
    pem = entry.get(KEY_FIELD) if isinstance(entry, dict) else None
    if pem is None:
        return None
    from ..audit.errors import AuditError  # cryptography only for a directory that holds keys
    from ..audit.keys import PublicKey

    if not isinstance(pem, str):
        raise ValueError(f"{path}: user {uid!r}: {KEY_FIELD!r} must be PEM text (the approver's .pub.pem)")
    try:
        return PublicKey.from_pem(pem, where=f"{path}: user {uid!r}: {KEY_FIELD!r}")
    except AuditError as exc:
        raise ValueError(str(exc)) from None


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def store_token_hash(path: str | Path, user: str, digest: str) -> str:
    """Record ``digest`` (the SHA-256 of a sign-in token) as ``token_sha256`` of ``user`` in the directory file.

    Returns the user's canonical id. The file is re-written whole (atomically,
    through a temporary file): its leading comment block is kept, comments
    inside the mapping are not. Raises ``ValueError`` naming the problem.
    """
    if not _is_sha256(digest):
        raise ValueError("a token hash must be 64 lower-case hex digits")
    p = Path(path)
    directory = FileDirectory.load(p)  # the file must be a valid directory before and after
    try:
        key = canonical_identity(user, "user")
    except IdentityError as exc:
        raise ValueError(str(exc)) from None
    if key not in directory.users:
        raise ValueError(f"unknown user {user!r}: not in the user directory {p}")
    text = yamlfile.read_text(p, "user directory")
    doc = yamlfile.loads(text, p, "user directory")
    for uid, entry in doc["users"].items():
        if canonical_identity(str(uid)) == key:
            entry = dict(entry or {})
            entry[TOKEN_FIELD] = digest
            doc["users"][uid] = entry
    header = _leading_comments(text)
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(header + body)
        os.chmod(tmp, p.stat().st_mode & 0o777)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    FileDirectory.load(p)  # what was written reads back
    return key


def _leading_comments(text: str) -> str:
    """The comment lines at the top of ``text`` (kept when the file is re-written)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line + "\n")
    return "".join(out)
