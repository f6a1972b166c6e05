"""Locate the files shipped beside the code (grammar, SQL reports, example rules), and the cache.

In a built wheel the shipped files live in ``policyengine/_data``; in a source
checkout (``pip install -e .``) they are the top-level folders of the repository.
The user's cache (parsed rule files, the analysed grammar) lives under
``cache_root()``; ``POLICYENGINE_NO_CACHE=1`` turns every on-disk cache off.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


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
