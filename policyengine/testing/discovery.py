"""Where policy tests are: test files under folders, and the policy files a test file names.

Kept apart from the test-file format (``cases.py``, which needs PyYAML) so that
``check`` can find test files and re-expand their ``policy:`` paths (to know
whether a cached outcome still holds) without importing a YAML parser.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

TEST_FILE_SUFFIXES: tuple[str, ...] = ("_test.yaml", "_test.yml")
POLICY_SUFFIX = ".policy"
# How a test file names a set of policy files: the folder beside it (no ``policy:``),
# a folder (searched recursively) or one file.
PolicySourceKind = Literal["beside", "folder", "file"]
PolicySource = tuple[str, PolicySourceKind]

__all__ = ["TEST_FILE_SUFFIXES", "POLICY_SUFFIX", "PolicySource", "PolicySourceKind", "skipped_folder",
           "is_test_file", "discover", "policy_files_in", "policy_files_of", "shown_path"]

_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"})


def skipped_folder(name: str) -> bool:
    """Folders discovery never enters: hidden ones and build or environment folders."""
    return name.startswith(".") or name in _SKIP_DIRS


def is_test_file(path: Path) -> bool:
    """``*_test.yaml`` or ``*_test.yml``."""
    return path.name.endswith(TEST_FILE_SUFFIXES)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Test files under ``paths``: a file is taken as given, a folder is searched.

    Hidden folders (``.venv``, ``.git``) and build folders are skipped, so
    ``policyengine test`` at a repository root does not wander into them.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_walk(path))
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _walk(folder: Path) -> Iterator[Path]:
    """The test files under ``folder``; a folder that cannot be listed is yielded itself, so that reading it
    as a test file reports why (``cases.load_test_file``) instead of its tests being passed over."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        yield folder
        return
    for entry in entries:
        if entry.is_dir():
            if not skipped_folder(entry.name):
                yield from _walk(entry)
        elif is_test_file(entry):
            yield entry


# --- policy files a test file covers ---------------------------------------------------


def policy_files_in(folder: Path, recursive: bool) -> list[Path]:
    """The ``.policy`` files in ``folder`` (and below it when ``recursive``), sorted, hidden ones included: the
    files ``eval --rules FOLDER`` decides with (``loader.policy_files_under``), so a test exercises that policy.
    ``OSError`` when a folder in it cannot be listed (its rules would be left out of the test)."""
    if recursive:
        from ..loader import policy_files_under

        found, unlisted = policy_files_under(folder)
        if unlisted:
            raise unlisted[0]
        return [Path(name) for name in found]
    return sorted(p for p in folder.glob("*" + POLICY_SUFFIX) if p.is_file())


def shown_path(path: str) -> str:
    """A path relative to the working folder when it lies inside it (as people type them)."""
    if not os.path.isabs(path):
        return os.path.normpath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def policy_files_of(source: PolicySource) -> list[Path] | None:
    """The policy files ``source`` names now; None when its folder or file is gone (or changed kind);
    ``OSError`` when a folder in it cannot be listed."""
    path, kind = Path(source[0]), source[1]
    if kind == "file":
        return [path] if path.is_file() else None
    if not path.is_dir():
        return None
    return policy_files_in(path, recursive=kind == "folder")
