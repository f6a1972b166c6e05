"""``policyengine check`` and ``policyengine fmt`` end to end, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CLEAN = """package t.clean

role analyst

rule analysts_read
    allow role analyst to read dataset "erp/*"
"""
BROKEN = "package t.broken\n\nrule r\n    allow role analyst read dataset \"x\"\n"
WARNING_ONLY = """package t.warn

role analyst

rule read_ghost
    allow role analyst to invoke model "ghost_model"
"""
UNFORMATTED = 'package t.messy\nrole analyst   # the only role\nrule r allow role analyst to read dataset "x" when context.a>1\n'


# the installed console script, as users run it (``python -m policyengine`` if it is missing)
SCRIPT = Path(sys.executable).with_name("policyengine")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "policyengine"]


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLICYENGINE_NO_CACHE": "1"}
    return subprocess.run(
        [*COMMAND, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    return tmp_path


def test_check_the_example_rules_is_clean() -> None:
    result = run("check", "rules/", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("0 errors, 0 warnings")


@pytest.mark.parametrize("given, summary", [
    ("one.policy", "checked 1 file (and 1 imported): 0 errors, 0 warnings"),
    ("common/regions.policy", "checked 1 file: 0 errors, 0 warnings"),
    (".", "checked 2 files: 0 errors, 0 warnings"),
])
def test_check_counts_the_files_given_and_names_the_imported_ones(tmp_path: Path, given: str, summary: str) -> None:
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "regions.policy").write_text('package common.regions\nconst EU = ["DE"]\n')
    (tmp_path / "one.policy").write_text('package one\nimport common.regions\nrole r\nrule x\n'
                                         '    allow role r to read dataset "*"\n    when data.origin in EU\n')
    result = run("check", given, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == summary


def test_check_reports_a_syntax_error_with_position_and_caret(project: Path) -> None:
    (project / "rules" / "a.policy").write_text(CLEAN, encoding="utf-8")
    (project / "rules" / "b.policy").write_text(BROKEN, encoding="utf-8")
    result = run("check", "rules", cwd=project)
    no_traceback(result)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "rules/b.policy:4:24: error[syntax]: expected 'to' and an action after the principal, found 'read'"
    assert lines[1] == '   4 |     allow role analyst read dataset "x"'
    assert lines[2] == "                              ^^^^"
    assert lines[-1] == "checked 2 files: 1 error, 0 warnings (fix the syntax errors to run the other checks)"


def test_warnings_fail_only_with_strict(project: Path) -> None:
    (project / "rules" / "w.policy").write_text(WARNING_ONLY, encoding="utf-8")
    relaxed = run("check", "rules", cwd=project)
    assert relaxed.returncode == 0, relaxed.stdout
    assert "warning[" in relaxed.stdout and relaxed.stdout.splitlines()[-1].endswith("0 errors, 1 warning")
    strict = run("check", "--strict", "rules", cwd=project)
    assert strict.returncode == 1


def test_check_json_is_a_list_of_findings_for_tools(project: Path) -> None:
    (project / "rules" / "b.policy").write_text(BROKEN, encoding="utf-8")
    result = run("check", "--error-format", "json", "rules", cwd=project)
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    assert findings == [{
        "file": "rules/b.policy", "line": 4, "col": 24, "end_line": 4, "end_col": 28, "severity": "error",
        "code": "syntax", "message": "expected 'to' and an action after the principal, found 'read'", "help": None,
    }]
    assert "checked 1 file: 1 error" in result.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x9c", b"(" * 5000, b"package t rule r allow any to"])
def test_check_never_shows_a_traceback(project: Path, content: bytes) -> None:
    (project / "rules" / "x.policy").write_bytes(content)
    result = run("check", "rules", cwd=project)
    no_traceback(result)
    assert result.returncode == 1
    assert result.stdout.startswith("rules/x.policy:")


def test_check_usage_errors_exit_2(project: Path) -> None:
    assert run("check", cwd=project).returncode == 2
    assert run("check", "--error-format", "xml", "rules", cwd=project).returncode == 2


def test_check_of_a_folder_without_policies_fails(project: Path) -> None:
    result = run("check", "rules", cwd=project)
    assert result.returncode == 1 and "no .policy files found" in result.stdout


def test_fmt_check_lists_files_that_would_change_then_fmt_fixes_them(project: Path) -> None:
    messy = project / "rules" / "messy.policy"
    clean = project / "rules" / "clean.policy"
    messy.write_text(UNFORMATTED, encoding="utf-8")
    clean.write_text(CLEAN, encoding="utf-8")

    check = run("fmt", "--check", "rules", cwd=project)
    assert check.returncode == 1
    assert check.stdout == "would reformat rules/messy.policy\n"
    assert messy.read_text(encoding="utf-8") == UNFORMATTED, "--check must not write"

    diff = run("fmt", "--diff", "rules", cwd=project)
    assert diff.returncode == 0
    assert "-rule r allow role analyst" in diff.stdout and "+    when context.a > 1" in diff.stdout
    assert messy.read_text(encoding="utf-8") == UNFORMATTED, "--diff must not write"

    fix = run("fmt", "rules", cwd=project)
    assert fix.returncode == 0 and fix.stdout == "formatted rules/messy.policy\n"
    assert messy.read_text(encoding="utf-8") == (
        "package t.messy\n\nrole analyst  # the only role\n\nrule r\n"
        '    allow role analyst to read dataset "x"\n    when context.a > 1\n'
    )
    assert run("fmt", "--check", "rules", cwd=project).returncode == 0


def test_fmt_leaves_a_broken_file_untouched_and_fails(project: Path) -> None:
    broken = project / "rules" / "b.policy"
    broken.write_text(BROKEN, encoding="utf-8")
    result = run("fmt", "rules", cwd=project)
    no_traceback(result)
    assert result.returncode == 1
    assert "rules/b.policy:4:24: error[syntax]" in result.stderr
    assert broken.read_text(encoding="utf-8") == BROKEN


def test_help_explains_with_examples() -> None:
    for command in ("check", "fmt"):
        result = run(command, "--help", cwd=ROOT)
        assert result.returncode == 0
        assert "Examples:" in result.stdout and f"policyengine {command} " in result.stdout


def test_a_corrupt_cache_does_not_matter(project: Path) -> None:
    (project / "rules" / "a.policy").write_text(CLEAN, encoding="utf-8")
    cache = project / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("POLICYENGINE_NO_CACHE", None)
    command = [*COMMAND, "check", "rules"]
    first = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert any(p.name == "grammar.lark-cache" for p in written) and any(p.suffix == ".pickle" for p in written)
    for path in written:
        path.write_bytes(b"\x80\x04garbage")
    second = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert second.stderr == ""


def test_fmt_dash_formats_stdin_to_stdout(project: Path) -> None:
    result = run("fmt", "-", cwd=project, stdin=UNFORMATTED)
    assert result.returncode == 0
    assert result.stdout.startswith("package t.messy\n\nrole analyst  # the only role\n")
    assert run("fmt", "--check", "-", cwd=project, stdin=result.stdout).returncode == 0
    broken = run("fmt", "-", cwd=project, stdin=BROKEN)
    assert broken.returncode == 1 and broken.stderr.startswith("<stdin>:4:24: error[syntax]")
    assert "   4 |     allow role analyst read" in broken.stderr
