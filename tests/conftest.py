"""Every test runs in its own empty working directory; the throwaway
PostgreSQL and Redis servers live in tests/services.py.

A user's first commands (`policyengine demo`, then `python -m pytest`) leave
`./policyengine.key`, `./policyengine.duckdb` and `./policyengine.mask.yaml` in
the repository root, and CLI commands default to exactly those files. Running
each test in a fresh temporary cwd means a subprocess that forgets `cwd=` (or a
command that falls back to a default path) can never pick up what the demo, or
another test, left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["services"]


@pytest.fixture(autouse=True)
def _fresh_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)
