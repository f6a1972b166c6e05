"""``policyengine test``: run the YAML policy tests beside the rule files."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("-k", "keyword", metavar="PATTERN", help="Run only cases whose 'file::name' contains PATTERN ('not PATTERN' inverts).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write JUnit XML (for CI test reports) to FILE.")
@click.option("--coverage", "with_coverage", is_flag=True, help="Report declarations and when clauses no test exercised.")
@click.option("--coverage-json", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write the coverage report as JSON to FILE (implies --coverage).")
@click.option("--fail-under", type=click.FloatRange(0, 100), metavar="PCT",
              help="Fail when declaration coverage is below PCT percent (implies --coverage).")
@click.option("--fail-under-clauses", type=click.FloatRange(0, 100), metavar="PCT",
              help="Fail when when-clause coverage is below PCT percent (implies --coverage).")
@click.option("--mutations", is_flag=True,
              help="Also flip each allow/deny, change each threshold (bias/drift windows and min samples too) "
                   "and swap each pair of route candidates in the rule files in PATHS, one at a time, "
                   "and fail if the tests miss any change.")
@click.option("-v", "--verbose", is_flag=True, help="One line per case instead of one per file.")
def test_command(paths: tuple[Path, ...], keyword: str | None, junit_file: Path | None, with_coverage: bool,
                 coverage_json: Path | None, fail_under: float | None, fail_under_clauses: float | None,
                 mutations: bool, verbose: bool) -> None:
    """Run policy tests (*_test.yaml files) found under PATHS (default: .).

    Each case's request is decided by the engine and compared with its
    expected effect, deciding rules, route and obligations; each monitor
    case's sample calls are judged by the bias/drift monitor. Exit 0 when every
    case passes, 1 on any failure or unusable test file, or when a folder named
    in PATHS holds no test file. See docs/policy-tests.md.

    Example: policyengine test rules/ --coverage --fail-under 100 --junit report.xml
    """
    from ..testing.discovery import POLICY_SUFFIX
    from ..testing.coverage import CoverageCollector
    from ..testing.junit import junit_xml
    from ..testing.output import coverage_shortfall, render_report
    from ..testing.runner import run_paths

    roots = list(paths) or [Path(".")]
    if mutations:  # mutants are made of a folder's rule files: a test file alone would be passed untried
        single = next((root for root in roots if not root.is_dir()), None)
        if single is not None:
            raise click.UsageError(f"--mutations: {single} is a file; name the folder that holds the rule files "
                                   "and their tests")
    want_coverage = (with_coverage or fail_under is not None or fail_under_clauses is not None
                     or coverage_json is not None)
    collector = CoverageCollector() if want_coverage else None
    report = run_paths(roots, keyword=keyword, observer=collector)
    if collector is not None:
        policy_files = [str(p) for root in roots for p in _policy_files(root, POLICY_SUFFIX)]
        report = dataclasses.replace(report, coverage=collector.report(policy_files))
    mutation_reports = []
    if mutations and report.ok:  # mutants are only meaningful when the tests pass as they are
        from ..testing.mutations import run_mutations

        mutation_reports = [run_mutations(root) for root in roots if root.is_dir()]
    click.echo(render_report(report, verbose=verbose, fail_under=fail_under, fail_under_clauses=fail_under_clauses,
                             mutations=mutation_reports))
    try:
        if junit_file is not None:
            junit_file.write_text(junit_xml(report), encoding="utf-8")
        if coverage_json is not None and report.coverage is not None:
            coverage_json.write_text(json.dumps(report.coverage.to_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        click.echo(f"error: cannot write {exc.filename}: {exc.strerror}", err=True)
        sys.exit(1)
    if not report.files:
        click.echo("error: no policy test files (*_test.yaml) found", err=True)
        sys.exit(1)
    from ..testing.discovery import discover

    bare = [root for root in paths if not discover([root])]  # a folder named for its tests that holds none
    if bare:
        click.echo(f"error: {bare[0]}: no policy test files (*_test.yaml) found here; nothing in it was tested",
                   err=True)
        sys.exit(1)
    if keyword and not report.results and not report.errors:
        click.echo(f"error: -k {keyword!r} selected no case", err=True)  # a typo must not pass CI silently
        sys.exit(1)
    short = report.coverage is not None and coverage_shortfall(report.coverage, fail_under, fail_under_clauses)
    survived = any(m.survivors or not m.baseline_ok for m in mutation_reports)
    sys.exit(0 if report.ok and not short and not survived else 1)


def _policy_files(root: Path, suffix: str) -> list[Path]:
    """Rule files under ``root`` (hidden folders skipped), so untested files count as uncovered."""
    if root.is_file():
        return [root] if root.name.endswith(suffix) else []
    from ..testing.discovery import skipped_folder

    return sorted(p for p in root.rglob("*" + suffix) if not any(skipped_folder(part) for part in p.relative_to(root).parts[:-1]))


