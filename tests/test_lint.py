"""The code passes the linter rules of ``[tool.ruff]`` in pyproject.toml: mistakes, not taste.

Unused and undefined names, imports out of place and likely bugs (bugbear) fail
the suite, so they are caught where they are written, not in review.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_in_the_package_tests_and_benchmarks():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           "policyengine", "tests", "benchmarks"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert "No module named ruff" not in proc.stderr, "ruff is a dev dependency: pip install -e '.[dev]'"
    assert proc.returncode == 0, proc.stdout + proc.stderr
