"""Each concern of the storage seam has one owner module (issue 13, item 1): no second copy creeps back.

Default paths, opening DuckDB and PostgreSQL, and loading YAML each lived in
3-5 places across areas; a copy that drifts (another default key name, a
connection that skips the one-line lock error) is what the seam is for. Read
from the source's syntax tree, so docstrings and help texts do not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "policyengine"


def _dotted(node: ast.AST) -> str | None:
    """``module.name`` of an attribute of a plain name (``duckdb.connect``, ``yaml.SafeLoader``)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def _imported(node: ast.AST) -> set[str]:
    """The top-level modules ``node`` imports (``import a.b`` and ``from a.b import c`` give ``a``)."""
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def sites(kind: str, what: str) -> set[str]:
    """The modules (relative to the package) with a string constant ``what``, a use of an attribute matching the
    pattern ``what`` (``use``), or an import of the module ``what``."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if kind == "string" and isinstance(node, ast.Constant) and node.value == what:
                found.add(path.relative_to(PACKAGE).as_posix())
            elif kind == "use" and re.fullmatch(what, _dotted(node) or ""):
                found.add(path.relative_to(PACKAGE).as_posix())
            elif kind == "import" and what in _imported(node):
                found.add(path.relative_to(PACKAGE).as_posix())
    return found


# (kind, what, the one owner module(s))
OWNERS = [
    ("string", "policyengine.duckdb", {"store/files.py"}),  # DEFAULT_DB_PATH
    ("string", "policyengine.key", {"store/files.py"}),  # DEFAULT_KEY_PATH
    ("string", "policyengine.directory.yaml", {"store/files.py"}),  # DIRECTORY_NAME, found by beside_database
    ("string", "policyengine.mask.yaml", {"store/files.py"}),  # MASK_NAME, found by beside_database
    ("use", r"duckdb\.connect", {"store/files.py", "audit/log.py", "audit/export.py"}),  # open_duckdb; the log's own
    ("import", "psycopg", {"store/postgres.py"}),  # PostgreSQL: the store's pool only
    ("use", r"yaml\.(?:(?:safe_|full_|unsafe_)?load(?:_all)?|compose(?:_all)?|C?(?:Safe|Full|Base)?Loader)",
     {"yamlfile.py"}),  # one loader: safe, bounded, line numbers in errors
]


@pytest.mark.parametrize(("kind", "what", "owners"), OWNERS, ids=[f"{k} {w[:20]}" for k, w, _ in OWNERS])
def test_each_concern_of_the_store_has_one_owner(kind: str, what: str, owners: set[str]) -> None:
    found = sites(kind, what)
    assert found and found <= owners
