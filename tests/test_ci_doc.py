"""The exit codes docs/ci.md promises a CI gate are the ones the commands return (issue 18, item 8).

The doc once said a missing path exits 2 while ``check`` and ``fmt`` exit 1.
Each row holds the doc's words and a command: the test fails when either side
changes without the other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CI_MD = Path(__file__).resolve().parent.parent / "docs" / "ci.md"

# (the doc says, command, exit code, the line it prints first on stdout or stderr)
PROMISES = [
    ("for\n  `check` and `fmt` a missing path is such an error", ("check", "nope"), 1,
     "nope:1:1: error[load]: no such file or folder"),
    ("for\n  `check` and `fmt` a missing path is such an error", ("fmt", "nope"), 1,
     "nope:1:1: error[load]: no such file or folder"),
    ("for\n  `check` and `fmt` a missing path is such an error", ("fmt", "--check", "nope"), 1,
     "nope:1:1: error[load]: no such file or folder"),
    ("`2` means the command was wrong, such as a bad\n  option", ("check", "--bogus"), 2, "Usage: "),
    ("or a missing path given to `policyengine test`", ("test", "no/such/folder"), 2, "Usage: "),
]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("says", "command", "code", "first"), PROMISES, ids=[" ".join(p[1]) for p in PROMISES])
def test_ci_md_states_the_exit_code_the_command_returns(tmp_path: Path, says: str, command: tuple[str, ...],
                                                        code: int, first: str) -> None:
    assert _flat(says) in _flat(CI_MD.read_text(encoding="utf-8"))
    result = subprocess.run([sys.executable, "-m", "policyengine", *command], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == code
    assert (result.stdout or result.stderr).startswith(first)
    assert "Traceback" not in result.stderr  # "No step prints a Python traceback for bad input."
