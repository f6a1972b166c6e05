"""``policyengine check`` and ``policyengine fmt``: the commands rule authors run.

Both are thin over the library: ``loader.load_files`` + ``check.check_policy``
for ``check``, ``syntax.parse_policy`` + ``format.format_policy`` for ``fmt``.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from ..diagnostics import Finding, PolicyError, SourceCache, render_finding, sort_findings


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _emit(findings: list[Finding], error_format: str) -> None:
    findings = sort_findings(findings)
    if error_format == "json":
        click.echo(json.dumps([f.to_json() for f in findings], indent=2))
        return
    sources = SourceCache()
    for finding in findings:
        click.echo(render_finding(finding, sources))


@click.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--strict", is_flag=True, help="Fail on warnings too, not only on errors.")
@click.option(
    "--error-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="human: file:line:col, source line and caret; json: a list of findings for tools.",
)
@click.option("--no-tests", is_flag=True,
              help="Do not run the policy tests found with the checked files (nor look for cross-package effects).")
def check_command(paths: tuple[str, ...], strict: bool, error_format: str, no_tests: bool) -> None:
    """Parse and statically check policy files.

    PATHS are .policy files or folders (searched recursively for *.policy).
    Every problem is reported as file:line:col with the source line and a
    caret under it: syntax errors, unknown roles, models and consts, type
    mismatches, extends cycles, rules that can never match, and more.

    Once the files check clean, the policy tests found with them (*_test.yaml
    under the folders, or beside the files) are run: a failing case is a
    policy-test warning, and one decided by another package's rule, residency
    or gate a cross-package warning at that declaration (--no-tests skips this).

    Exit status: 0 when clean, 1 on errors (or on warnings with --strict),
    2 on a usage error.

    \b
    Examples:
      policyengine check rules/
      policyengine check rules/marketing/ rules/common/
      policyengine check --strict --error-format json rules/ > findings.json
    """
    from ..loader import load_files, no_policy_files, policy_paths

    loaded = load_files(paths)
    findings = list(loaded.findings)
    checked_note = ""
    tests_note = ""
    masks: list[str] = []
    if not loaded.files and not findings:
        findings.append(no_policy_files(paths))
    elif loaded.ok:
        from ..check import check_policy  # the checker is imported only when needed

        checked = check_policy(loaded.files)
        findings += checked.findings
        masks = _mask_lines(checked.policy) if checked.policy is not None else []
        if checked.policy is not None and not no_tests:
            from ..testing.cross_package import run_policy_tests  # only when the set is clean

            tests = run_policy_tests(paths)
            if tests is not None:
                findings += tests.findings
                tests_note = tests.summary()
    elif any(f.code == "syntax" for f in findings):
        checked_note = " (fix the syntax errors to run the other checks)"
    _emit(findings, error_format)
    if error_format != "json":
        for line in masks:
            click.echo(line)
    errors = sum(1 for f in findings if f.is_error)
    warnings = len(findings) - errors
    total = len(loaded.files) + sum(1 for f in loaded.findings if f.code == "syntax")
    given = len(policy_paths(paths)[0])
    imported = f" (and {total - given} imported)" if total > given else ""  # found by `import`, not named
    summary = (f"checked {_count(given, 'file')}{imported}: {_count(errors, 'error')}, "
               f"{_count(warnings, 'warning')}")
    if tests_note:
        click.echo(tests_note, err=error_format == "json")
    click.echo(summary + checked_note, err=error_format == "json")
    if errors or (strict and warnings):
        sys.exit(1)


def _mask_lines(policy: Any) -> list[str]:
    """One line per ``mask`` of the checked set: where, what, and the audit log pointer it masks."""
    from ..audit.masking import request_pointer

    return [f"{m.decl.span}: mask {m.decl.path.dotted} {m.decl.action.value} -> "
            f"{request_pointer(m.decl.path.root, m.decl.path.parts)}" for m in policy.masks]


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so an interrupted fmt never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@click.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 and list the files that would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Change nothing; print a unified diff of what would change.")
def fmt_command(paths: tuple[str, ...], check_only: bool, show_diff: bool) -> None:
    """Rewrite policy files in the one canonical layout.

    PATHS are .policy files or folders (searched recursively for *.policy).
    Formatting never changes what a file means and keeps its comments;
    running it twice changes nothing the second time. A file with a syntax
    error is reported and left untouched.

    \b
    Examples:
      policyengine fmt rules/               rewrite in place
      policyengine fmt --check rules/       in CI: exit 1 if any file would change
      policyengine fmt --diff rules/x.policy
      policyengine fmt - < x.policy         for editors: stdin to stdout
    """
    from ..format import format_policy
    from ..loader import no_policy_files, policy_paths
    from ..syntax import parse_policy

    if paths == ("-",):
        _fmt_stdin(check_only)
        return
    names, problems = policy_paths(paths)
    if not names and not problems:
        problems.append(no_policy_files(paths))
    changed: list[str] = []
    sources = SourceCache()
    for name in names:
        path = Path(name)
        try:
            text = path.read_bytes().decode("utf-8")
            tree = parse_policy(text, name)
        except (OSError, UnicodeDecodeError) as error:
            problems.append(_unreadable(name, error))
            continue
        except PolicyError as error:
            problems.extend(error.findings)
            continue
        formatted = format_policy(tree, text)
        if formatted == text:
            continue
        if parse_policy(formatted, name) != tree:  # belt and braces: never write a changed meaning
            problems.append(Finding("fmt", "formatting would change this file's meaning; left as is", tree.span))
            continue
        changed.append(name)
        if show_diff:
            diff = difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True), f"{name} (original)", f"{name} (formatted)"
            )
            click.echo("".join(diff), nl=False)
        elif check_only:
            click.echo(f"would reformat {name}")
        else:
            _write_atomically(path, formatted)
            click.echo(f"formatted {name}")
    for finding in sort_findings(problems):
        click.echo(render_finding(finding, sources), err=True)
    unchanged = len(names) - len(changed) - len(problems)
    verb = "would be reformatted" if (check_only or show_diff) else "reformatted"
    summary = f"{_count(len(changed), 'file')} {verb}, {max(unchanged, 0)} unchanged"
    if problems:
        summary += f", {_count(len(problems), 'error')}"
    click.echo(summary, err=True)
    if problems or (changed and check_only):
        sys.exit(1)


def _fmt_stdin(check_only: bool) -> None:
    """``fmt -``: format standard input to standard output (for editors)."""
    from ..format import format_policy
    from ..syntax import parse_policy

    text = sys.stdin.read()
    try:
        formatted = format_policy(parse_policy(text, "<stdin>"), text)
    except PolicyError as error:
        sources = SourceCache({"<stdin>": text})
        for finding in error.findings:
            click.echo(render_finding(finding, sources), err=True)
        sys.exit(1)
    if check_only:
        sys.exit(0 if formatted == text else 1)
    click.echo(formatted, nl=False)


def _unreadable(name: str, error: Exception) -> Finding:
    from ..diagnostics import Span

    reason = "this file is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else f"cannot read this file: {error}"
    return Finding("load", reason, Span(name, 1, 1, 1, 2))


