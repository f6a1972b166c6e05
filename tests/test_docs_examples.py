"""Every shell example in README.md and docs/*.md runs, in a temporary directory, as written.

The docs are followed literally by new users, so they are tested like code (as
sqlite-utils tests its documentation). An example is a command line starting
with ``policyengine``, ``python`` or ``pytest`` (after an optional ``$ ``) in a
fenced block marked ``sh``, ``console``, ``bash`` or unmarked, or in a 4-space
indented block. Backslash continuations are joined. The examples of one file run
in order in one temporary directory holding a copy of ``rules/`` plus the sample
files they name (``requests.jsonl``, ``decisions.csv``), so state flows from one
example to the next as it does for a reader. Each must exit 0.

Not run:

* synopses, recognised by placeholders: ``[optional parts]``, ``A|B``
  alternatives, ``...``, or an upper-case word such as ``FILE`` or ``PATHS``;
  the run id placeholder ``RUN`` is replaced by a real waiting run instead;
* the examples in ``SKIP`` below, each with the reason (a service, a tool that
  is not installed, or a command that is meant to fail). Add to it only with a
  reason; the test fails when a skip entry no longer matches any example.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_START = re.compile(r"^(?:\$ )?((?:policyengine|python|pytest|\. \.venv/bin/activate)\b.*)$")
_PLACEHOLDER = re.compile(r"\[[^\]]*\]|\.\.\.|\b(?!RUN\b)[A-Z][A-Z_]{2,}\b|\w\|\w")

# (doc file name, start of the command) -> why it is not run
SKIP: dict[tuple[str, str], str] = {
    ("README.md", ". .venv/bin/activate && python -m pytest"): "the test suite itself (this test is part of it)",
    ("README.md", "python3 -m venv .venv"): "installs into a new virtual environment (done by .ci/run)",
    ("server.md", "policyengine serve"): "starts a server that runs until stopped; tests/test_server_e2e.py "
                                         "runs it as a subprocess",
    ("gateway.md", "policyengine gateway"): "starts a server that runs until stopped; tests/test_gateway_cli.py "
                                            "runs the shipped example",
    ("inbox.md", "policyengine inbox serve"): "starts a server that runs until stopped; tests/test_inbox.py runs it "
                                              "as a subprocess",
    ("policy-tests.md", "pytest rules/"): "runs pytest from the repository, where rules/ is; covered by "
                                           "tests/test_cli_test.py",
}


def examples(doc: Path) -> list[tuple[int, str]]:
    """(line, command) of every shell example of ``doc``, synopses left out."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    lines = doc.read_text(encoding="utf-8").splitlines()
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        marker = re.match(r"^```(\w*)", line)
        if marker:
            fence = None if fence is not None else marker.group(1)
            continue
        if fence is not None and fence not in ("", "sh", "console", "bash"):
            continue
        if fence is None and not line.startswith("    "):
            continue
        text = line.strip()
        start = _START.match(text) or (re.match(r"^(python3 -m venv .*)$", text))
        if not start or re.match(r"^\S+ \S+:", start.group(1)):  # "policyengine test: 6 files" is output
            continue
        command, first = start.group(1), n
        while command.endswith("\\") and n < len(lines):
            command = command[:-1].rstrip() + " " + lines[n].strip()
            n += 1
        command = re.sub(r"\s+#.*$", "", command).strip()  # a trailing comment
        if _PLACEHOLDER.search(re.sub(r"'[^']*'|\"[^\"]*\"", "''", command)):  # quoted text is literal
            continue
        found.append((first, command))
    return found


def _skip_reason(doc: Path, command: str) -> str | None:
    return next((why for (name, start), why in SKIP.items() if name == doc.name and command.startswith(start)), None)


def _workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copyfile(ROOT / "tests" / "oracles" / "fairness" / "decisions.csv", tmp_path / "decisions.csv")
    request = {"principal": {"id": "u1", "roles": ["analyst"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "erp/invoices/1"}}
    (tmp_path / "requests.jsonl").write_text(json.dumps(request) + "\n" + json.dumps({**request, "action": "write"}))
    return tmp_path


def _waiting_runs(cwd: Path) -> list[str]:
    db = cwd / "policyengine.duckdb"
    if not db.exists():
        return []
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT run_id FROM orch_runs WHERE status = 'waiting_approval' "
                           "AND workflow = 'invoice-exceptions' ORDER BY run_id").fetchall()
    return [r for (r,) in rows]


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_shell_example_runs_as_written(doc: Path, tmp_path: Path) -> None:
    cwd = _workdir(tmp_path)
    env = {**os.environ, "COLUMNS": "120", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    used_runs: set[str] = set()
    failures = []
    for line, command in examples(doc):
        if _skip_reason(doc, command):
            continue
        if re.search(r"\bRUN\b", command):
            fresh = [r for r in _waiting_runs(cwd) if r not in used_runs]
            assert fresh, f"{doc.name}:{line}: no waiting run for {command!r} (run the demo first in the doc)"
            used_runs.add(fresh[0])
            command = re.sub(r"\bRUN\b", fresh[0], command)
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            failures.append(f"{doc.name}:{line}: {command}\n  exit {result.returncode}: "
                            f"{(result.stderr or result.stdout).strip()[-500:]}")
    assert not failures, "\n".join(failures)


def test_every_skip_entry_still_names_an_example() -> None:
    live = {(doc.name, start) for doc in DOCS for _, command in examples(doc)
            for (name, start) in SKIP if name == doc.name and command.startswith(start)}
    assert set(SKIP) == live, f"stale skip entries: {sorted(set(SKIP) - live)}"


def test_synopses_are_recognised_and_examples_kept() -> None:
    commands = {c for doc in DOCS for _, c in examples(doc)}
    assert "policyengine check --strict rules/" in commands
    assert "policyengine runs show RUN" in commands
    assert not any(c.startswith("policyengine eval --rules rules/ [more") for c in commands)
    assert shlex.split('policyengine query "SELECT 1"')  # quoted SQL keeps its capitals


def test_the_audit_docs_name_every_event_the_log_accepts() -> None:
    from policyengine.audit.log import EVENTS

    table = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    events_row = next(line for line in table.splitlines() if line.startswith("| `event` |"))
    assert sorted(e for e in EVENTS if f"`{e}`" not in events_row) == []
