"""Policy tests: YAML cases beside the rule files, run by ``policyengine test`` and pytest.

The public surface: ``load_test_file`` (the format, with ``file:line`` errors),
``run_paths`` / ``run_file`` (discover and run against the engine),
``CoverageCollector`` and ``junit_xml``. Every name is imported on first use so
that the pytest plugin, loaded by every pytest run, and ``check``, which looks
up cached test outcomes before it runs anything, stay cheap to import (the
test-file format needs PyYAML).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cases import Case, TestFile, TestFileError, load_test_file
    from .discovery import discover

_LAZY = {
    "Case": "cases",
    "TestFile": "cases",
    "TestFileError": "cases",
    "load_test_file": "cases",
    "discover": "discovery",
    "CaseResult": "runner",
    "FileError": "runner",
    "RunReport": "runner",
    "run_file": "runner",
    "run_paths": "runner",
    "CoverageCollector": "coverage",
    "CoverageReport": "coverage",
    "junit_xml": "junit",
}

__all__ = [
    "Case",
    "CaseResult",
    "CoverageCollector",
    "CoverageReport",
    "FileError",
    "RunReport",
    "TestFile",
    "TestFileError",
    "discover",
    "junit_xml",
    "load_test_file",
    "run_file",
    "run_paths",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
