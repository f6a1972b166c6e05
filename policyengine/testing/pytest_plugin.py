"""pytest plugin: ``pytest rules/`` collects policy test files, one pytest item per case.

Registered through the ``pytest11`` entry point, so it is active in every pytest
run of an environment where policyengine is installed. It therefore imports
nothing heavy at load time and only collects a ``*_test.yaml`` file that is
plainly a policy test: its folder holds ``.policy`` files or it names them with
a top-level ``policy:`` key. Which folders pytest walks is pytest's business:
with ``testpaths = ["tests"]`` a bare ``pytest`` never reaches ``rules/``; pass
``pytest rules/`` (or add it to ``testpaths``) to run policy tests with the rest.
``--no-policy-tests`` switches collection off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

_POLICY_KEY = re.compile(r"^policy\s*:", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("policyengine", "policy tests (policyengine)")
    group.addoption("--no-policy-tests", action="store_true", default=False,
                    help="do not collect policyengine *_test.yaml policy test files")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "policy: a policyengine policy test case from a *_test.yaml file")


def is_policy_test(path: Path) -> bool:
    """A ``*_test.yaml`` beside ``.policy`` files, or one that names its policy files."""
    from .discovery import POLICY_SUFFIX, is_test_file

    if not is_test_file(path):
        return False
    if any(path.parent.glob("*" + POLICY_SUFFIX)):
        return True
    try:
        return bool(_POLICY_KEY.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if parent.config.getoption("no_policy_tests", default=False):
        return None
    if is_policy_test(file_path):
        return PolicyTestFile.from_parent(parent, path=file_path)
    return None


class PolicyTestError(Exception):
    """A test file that cannot be run; shown as ``file:line: message`` without a traceback."""


class PolicyTestFile(pytest.File):
    """One policy test file: loads its policy once and yields its cases."""

    def collect(self) -> Any:
        from .cases import TestFileError, load_test_file
        from .runner import _load, _LoadFailed, _validate

        try:
            test_file = load_test_file(self.path)
            policy, ledger = _load(test_file)
            _validate(test_file, policy)
        except TestFileError as exc:
            raise PolicyTestError(str(exc)) from None
        except _LoadFailed as exc:
            raise PolicyTestError(f"{exc.error}\n{exc.error.details}".rstrip()) from None
        for case in test_file.cases:
            item = PolicyCase.from_parent(self, name=case.name)
            item.setup_case(test_file, case, policy, ledger)
            yield item
        for monitor in test_file.monitors:
            item = PolicyCase.from_parent(self, name=monitor.name)
            item.setup_case(test_file, monitor, policy, ledger)
            yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, PolicyTestError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class PolicyCaseFailed(Exception):
    def __init__(self, result: Any):
        self.result = result
        super().__init__("; ".join(result.mismatches))


class PolicyCase(pytest.Item):
    """One case: decided by the engine (or, for a monitor case, judged by the monitor), compared with what the test file expects."""

    def setup_case(self, test_file: Any, case: Any, policy: Any, ledger: Any) -> None:
        self._test_file, self._case, self._policy, self._ledger = test_file, case, policy, ledger
        self.add_marker("policy")

    def runtest(self) -> None:
        from .cases import MonitorCase
        from .runner import run_case, run_monitor

        if isinstance(self._case, MonitorCase):
            result = run_monitor(self._test_file, self._case, self._policy)
        else:
            result = run_case(self._test_file, self._case, self._policy, self._ledger)
        if not result.passed:
            raise PolicyCaseFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, PolicyCaseFailed):
            from .output import render_failure

            return render_failure(excinfo.value.result, header=False)
        from .cases import TestFileError

        if isinstance(excinfo.value, TestFileError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self._case.span.line - 1, f"policy case: {self.name}"
