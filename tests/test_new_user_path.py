"""The README's path for a new user: `policyengine demo`, then the test suite.

The demo writes its database, signing key and masking config into the current
directory. Nothing it leaves there may reach a commit (`.gitignore`) or change
the outcome of the test suite run from that same directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _demo(cwd: Path) -> None:
    demo = subprocess.run([sys.executable, "-m", "policyengine", "demo", "--limit", "3"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to read .gitignore as git does")
def test_nothing_the_demo_writes_is_one_git_add_away_from_a_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    shutil.copyfile(ROOT / ".gitignore", tmp_path / ".gitignore")
    _demo(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir() if p.name not in {".git", ".gitignore"})
    assert {"policyengine.duckdb", "policyengine.key", "policyengine.key.pub.pem", "policyengine.mask.yaml"} <= set(written)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True, timeout=60)
    assert status.stdout.splitlines() == ["?? .gitignore"], f"the demo wrote {written}; not ignored:\n{status.stdout}"


@pytest.mark.slow
def test_the_suite_ignores_what_the_demo_left_in_the_working_directory(tmp_path):
    # `models unblock` without --key falls back to ./policyengine.key: with the demo's key there, a test that
    # ran the CLI in the invoking directory signed with the wrong key and failed.
    _demo(tmp_path)
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q",
                            str(ROOT / "tests" / "test_model_blocks.py")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert suite.returncode == 0, suite.stdout[-3000:]
