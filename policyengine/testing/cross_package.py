"""``check`` runs the policy tests beside the checked rules and says which package broke whose tests.

Every package's tests usually load the whole ``rules/`` folder (``policy: ..``),
as it is deployed, so a new package's unscoped ``deny``, residency or gate
changes the decisions other teams' tests pin. After a clean check, ``check``
runs the tests found with the checked files and reports:

* ``cross-package`` (warning), at the declaration: a rule, residency or gate of
  one package decides a failing case of another package's tests (the case's
  own package is the one declared by the ``.policy`` files beside its test
  file). The help says how to scope it (docs/language.md, "Scopes").
* ``policy-test`` (warning), at the test file: cases that fail for other
  reasons, or a test file that could not run.

``check --no-tests`` skips all this. ``policyengine test`` stays the command
that runs and reports the tests themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnostics import Finding, Severity, Span
from ..policyset import PolicySet, Scoped
from .cases import discover, is_test_file
from .runner import CaseResult, run_paths


@dataclass(frozen=True, slots=True)
class TestRun:
    """What ``check`` ran: the counts for its summary line and the findings."""

    __test__ = False

    files: int
    passed: int
    failed: int
    findings: tuple[Finding, ...]

    def summary(self) -> str:
        plural = "s" if self.files != 1 else ""
        return (f"policy tests: {self.passed} passed, {self.failed} failed in {self.files} test file{plural} "
                f"(--no-tests skips them)")


def test_files_for(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The policy test files that go with the checked paths: under a folder, or beside a file."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(discover([path]))
        elif path.is_file():
            found.extend(sorted(p for p in path.parent.iterdir() if p.is_file() and is_test_file(p)))
    return discover(found)  # de-duplicated, in order


def _packages_by_folder(ps: PolicySet) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in ps.files:
        out.setdefault(os.path.realpath(os.path.dirname(f.path) or "."), set()).add(f.package.value)
    return out


def _declarations(ps: PolicySet) -> dict[str, tuple[str, Scoped[Any]]]:
    """Declaration id -> (kind in words, scoped declaration), for what a decision's reasons name."""
    out: dict[str, tuple[str, Scoped[Any]]] = {}
    for s in ps.rules:
        out[s.id] = (f"{s.decl.effect} rule", s)
    for s in ps.residencies:
        out[s.id] = ("residency", s)
    for s in ps.escalations:
        out[s.id] = ("escalation gate", s)
    for s in ps.budgets:
        out[s.id] = ("budget", s)
    return out


def _blamed(result: CaseResult, own: set[str], decls: dict[str, tuple[str, Scoped[Any]]]) -> list[str]:
    """Ids of other packages' declarations that took part in a failing case's decision."""
    decision = result.decision
    named = [r.get("rule") for r in decision.get("reasons", ())]
    named += [o.get("gate") for o in decision.get("obligations", ()) if o.get("kind") == "approval_required"]
    return list(dict.fromkeys(i for i in named if i in decls and decls[i][1].package not in own))


def run_policy_tests(paths: Sequence[str | os.PathLike[str]], ps: PolicySet) -> TestRun | None:
    """Run the tests that go with ``paths`` against the rules they name; None when there are none."""
    tests = test_files_for(paths)
    if not tests:
        return None
    report = run_paths(tests, explain=False)
    owners = _packages_by_folder(ps)
    decls = _declarations(ps)
    blame: dict[tuple[str, str], list[CaseResult]] = {}
    own_failures: dict[str, list[CaseResult]] = {}
    for result in report.results:
        if result.passed or not isinstance(result, CaseResult):
            if not result.passed:
                own_failures.setdefault(result.file, []).append(result)
            continue
        own = owners.get(os.path.realpath(os.path.dirname(result.file) or "."), set())
        culprits = _blamed(result, own, decls) if own else []
        for culprit in culprits:
            blame.setdefault((culprit, result.file), []).append(result)
        if not culprits:
            own_failures.setdefault(result.file, []).append(result)
    findings: list[Finding] = []
    for (culprit, test_file), results in blame.items():
        kind, scoped = decls[culprit]
        first = results[0]
        own = sorted(owners.get(os.path.realpath(os.path.dirname(test_file) or "."), set()))
        findings.append(Finding(
            "cross-package",
            f"{kind} {culprit} changes {len(results)} decision(s) of package {', '.join(own)}'s tests in "
            f"{test_file} (first: '{first.case.name}': {first.mismatches[0]})",
            scoped.decl.name.span, Severity.WARNING,
            "scope the package ('scope workflow \"...\"' in its header) or this declaration "
            "('applies to workflow \"...\" action ...'); see docs/language.md, Scopes"))
    for test_file, results in own_failures.items():
        line = results[0].case.span.line if isinstance(results[0], CaseResult) else 1
        findings.append(Finding(
            "policy-test", f"{len(results)} case(s) of {test_file} fail (first: '{results[0].case.name}')",
            Span(test_file, line, 1, line, 1), Severity.WARNING,
            f"run 'policyengine test {test_file}' to see why"))
    for error in report.errors:
        findings.append(Finding("policy-test", f"the policy tests in {error.file} could not run: {error.message}",
                                Span(error.file, error.line, 1, error.line, 1), Severity.WARNING))
    return TestRun(len(report.files), report.passed, report.failed + len(report.errors), tuple(findings))
