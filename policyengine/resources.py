"""Locate the files shipped beside the code (grammar, SQL reports, example rules), and the cache.

In a built wheel the shipped files live in ``policyengine/_data``; in a source
checkout (``pip install -e .``) they are the top-level folders of the repository.
The user's cache (parsed rule files, the analysed grammar) lives under
``cache_root()``; ``POLICYENGINE_NO_CACHE=1`` turns every on-disk cache off.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_SUFFIXES = (".py", ".sql", ".lark")
_SOURCE_DIGEST: str | None = None


def data_path(name: str) -> Path:
    """Return the folder ``name`` (``grammar``, ``reports`` or ``rules``)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"policyengine data folder {name!r} is missing from the installation")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/policyengine`` (``~/.cache/policyengine`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "policyengine"


def caching_enabled() -> bool:
    """False when ``POLICYENGINE_NO_CACHE`` is set to anything but ``""`` or ``0``."""
    return os.environ.get("POLICYENGINE_NO_CACHE", "") in ("", "0")


def grammar_text() -> str:
    """The policy grammar (Lark), read by the parser and hashed into the parse cache's version."""
    return (data_path("grammar") / "policy.lark").read_text(encoding="utf-8")


def source_digest() -> str:
    """sha256 of policyengine's own code: every Python and SQL file of the package, and the grammar.

    Results cached on disk across processes (policy test outcomes) are keyed by
    it, so any change to the engine, an upgrade or an edit of a checkout,
    invalidates them. Computed once per process (a few milliseconds).
    """
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        digest = hashlib.sha256()
        folders = [_PACKAGE_DIR]
        try:
            folders.append(data_path("grammar"))
        except FileNotFoundError:
            pass
        for folder in folders:
            for name, path in _sources(str(folder), ""):
                with open(path, "rb") as handle:
                    data = handle.read()
                digest.update(f"{name}\0{len(data)}\0".encode())
                digest.update(data)
        _SOURCE_DIGEST = digest.hexdigest()
    return _SOURCE_DIGEST


def _sources(folder: str, prefix: str) -> list[tuple[str, str]]:
    """(name under the root, path) of the source files under ``folder``, in a stable order.

    ``__pycache__`` and hidden folders are left out.
    """
    found: list[tuple[str, str]] = []
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir():
            if entry.name != "__pycache__" and not entry.name.startswith("."):
                found.extend(_sources(entry.path, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(_SOURCE_SUFFIXES):
            found.append((prefix + entry.name, entry.path))
    return found
