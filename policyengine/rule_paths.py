"""How decisions, audit records and reports name the rule files: relative to the rules root.

A decision says which rule decided, in which file, on which line. The file is
recorded relative to the *rules root* (the folder given to ``--rules``, or the
folder of a file given alone), with ``/`` separators, so a record made on one
machine reads the same on another: ``finance/invoices.policy``, never
``/home/alice/checkout/rules/finance/invoices.policy``. Together with the
decision's ``policy_hash`` (which hashes the canonical text, not the paths) it
names the rule exactly. Files outside the root are recorded as
``policyengine:rules/...`` when they are the shipped rules (an imported
``common.regions``), else relative to the root (``../shared/x.policy``).

This module is the one place that decides these names; the checker's and
parser's messages keep the paths as given (they point at files on this machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

SHIPPED_PREFIX = "policyengine:rules/"


def rules_root(paths: Sequence[str | os.PathLike[str]]) -> str:
    """The folder names are relative to: the given folder, a given file's folder, or what several share."""
    roots = []
    for given in paths:
        path = Path(given)
        roots.append(os.path.realpath(path if path.is_dir() else path.parent))
    if not roots:
        return os.path.realpath(".")
    try:
        return os.path.commonpath(roots)
    except ValueError:  # different drives: no common folder
        return roots[0]


def _shipped_root() -> str | None:
    try:
        from .resources import data_path

        return os.path.realpath(data_path("rules"))
    except Exception:  # no shipped rules (a trimmed install): nothing is recorded as shipped
        return None


def recorded_name(file: str, root: str) -> str:
    """``file`` as decisions record it (see the module docstring); ``<string>`` and the like stay as they are."""
    if file.startswith("<"):
        return file
    real = os.path.realpath(file)
    shipped = _shipped_root()
    for base, prefix in ((root, ""), (shipped, SHIPPED_PREFIX)):
        if base is not None and (real == base or real.startswith(base.rstrip(os.sep) + os.sep)):
            return prefix + PurePosixPath(*Path(os.path.relpath(real, base)).parts).as_posix()
    try:
        return PurePosixPath(*Path(os.path.relpath(real, root)).parts).as_posix()
    except ValueError:  # another drive
        return Path(file).name


def recorded_names(files: Iterable[str], root: str) -> dict[str, str]:
    """``{file as parsed: recorded name}`` for every file of a policy set."""
    return {f: recorded_name(f, root) for f in files}


def recorded(names: Mapping[str, str], file: str) -> str:
    """The recorded name of ``file`` (itself when the set was built without a root, e.g. in code)."""
    return names.get(file, file)
