"""Locate the files shipped beside the code (grammar, SQL reports, example rules).

In a built wheel they live in ``policyengine/_data``; in a source checkout
(``pip install -e .``) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Return the folder ``name`` (``grammar``, ``reports`` or ``rules``)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"policyengine data folder {name!r} is missing from the installation")
