"""The user directory: who holds which roles, loaded from a YAML file (``data/directory.yaml`` ships one).

The four-eyes and role checks that use it live in ``orchestrator/approvals.py``
(which re-exports this class as ``Directory``); this module owns where the
directory comes from. It implements the ``Directory`` protocol (``roles()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .. import yamlfile
from ..identity import IdentityError, canonical_identity


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    roles: tuple[str, ...]


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
            users[key] = User(key, str(entry.get("name", uid)), tuple(roles))
        migrators = doc.get("migrate_policy_roles") or []
        if not isinstance(migrators, list) or not all(isinstance(r, str) for r in migrators):
            raise ValueError(f"{p}: 'migrate_policy_roles' must be a list of role names")
        return cls(MappingProxyType(users), str(p), hashlib.sha256(raw_bytes).hexdigest(), tuple(migrators))

    def roles(self) -> Mapping[str, tuple[str, ...]]:
        """User id -> roles, the form ``Policy.evaluate(directory=...)`` takes."""
        return MappingProxyType({u.id: u.roles for u in self.users.values()})
