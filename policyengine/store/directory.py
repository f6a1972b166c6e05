"""The user directory: who holds which roles, loaded from a YAML file (``data/directory.yaml`` ships one).

The four-eyes and role checks that use it live in ``orchestrator/approvals.py``
(which re-exports this class as ``Directory``); this module owns where the
directory comes from. It implements the ``Directory`` protocol (``roles()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml


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

    @classmethod
    def load(cls, path: str | Path) -> FileDirectory:
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ValueError(f"{p}: cannot read user directory: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark else str(p)
            raise ValueError(f"{where}: user directory is not valid YAML") from None
        raw = doc.get("users") if isinstance(doc, dict) else None
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: user directory needs a top-level 'users' mapping")  # noqa: TRY004 - a bad file, not a bad argument
        users: dict[str, User] = {}
        for uid, entry in raw.items():
            entry = entry or {}
            roles = entry.get("roles", []) if isinstance(entry, dict) else None
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ValueError(f"{p}: user {uid!r}: 'roles' must be a list of role names")
            users[str(uid)] = User(str(uid), str(entry.get("name", uid)), tuple(roles))
        return cls(MappingProxyType(users), str(p))

    def roles(self) -> Mapping[str, tuple[str, ...]]:
        """User id -> roles, the form ``Policy.evaluate(directory=...)`` takes."""
        return MappingProxyType({u.id: u.roles for u in self.users.values()})
