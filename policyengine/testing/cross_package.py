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
that runs and reports the tests themselves. A test file that passed before and
whose inputs are unchanged is not run again (``outcome_cache.py``): its recorded
passes are counted, and nothing but this module and the cache is imported when
every file is cached.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diagnostics import Finding, Severity, Span
from ..policyset import PolicySet, Scoped
from .discovery import discover, is_test_file
from .outcome_cache import OutcomeCache

if TYPE_CHECKING:
    from .runner import CaseResult, RunReport


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


def _own_packages(ps: PolicySet, test_file: str) -> set[str]:
    """The packages declared by the ``.policy`` files beside a test file: whose tests they are."""
    folder = os.path.realpath(os.path.dirname(test_file) or ".")
    return {f.package.value for f in ps.files if os.path.realpath(os.path.dirname(f.path) or ".") == folder}


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


def _named(result: CaseResult) -> list[str]:
    """Ids a decision names: its reasons' rules and the gates of its approval obligations."""
    decision = result.decision
    named = [r.get("rule") for r in decision.get("reasons", ())]
    named += [o.get("gate") for o in decision.get("obligations", ()) if o.get("kind") == "approval_required"]
    return [n for n in dict.fromkeys(named) if isinstance(n, str)]


def _without(ps: PolicySet, package: str) -> PolicySet:
    """The policy set without ``package``'s rules, residencies, gates and budgets (what it would decide alone)."""
    def keep(items: tuple[Scoped[Any], ...]) -> tuple[Scoped[Any], ...]:
        return tuple(s for s in items if s.package != package)

    return replace(ps, rules=keep(ps.rules), residencies=keep(ps.residencies),
                   escalations=keep(ps.escalations), budgets=keep(ps.budgets))


class _Blamer:
    """Finds, for a failing case, the other package without which it would pass (the counterfactual)."""

    def __init__(self) -> None:
        self._tests: dict[str, Any] = {}
        self._without: dict[tuple[int, str], tuple[Any, Any]] = {}

    def culprits(self, result: CaseResult) -> tuple[list[str], dict[str, tuple[str, Scoped[Any]]], set[str]]:
        from ..engine import Policy, load_policy
        from .cases import load_test_file
        from .runner import _CaseLedger, run_case

        test_file = self._tests.get(result.file)
        if test_file is None:
            test_file = self._tests[result.file] = load_test_file(result.file)
        policy = load_policy(list(test_file.policy_files))  # the engine's cache: the one run_paths loaded
        ps = policy.policy_set
        decls = _declarations(ps)
        own = _own_packages(ps, result.file)
        named = [i for i in _named(result) if i in decls]
        for package in dict.fromkeys(decls[i][1].package for i in named):
            if not own or package in own:
                continue
            key = (id(ps), package)
            if key not in self._without:
                ledger = _CaseLedger()  # each case starts from its own usage, as in run_case
                self._without[key] = (Policy(_without(ps, package), policy_hash=policy.policy_hash, ledger=ledger),
                                      ledger)
            alone, ledger = self._without[key]
            if run_case(test_file, result.case, alone, ledger, explain=False).passed:
                return [i for i in named if decls[i][1].package == package], decls, own
        return [], decls, own


def run_policy_tests(paths: Sequence[str | os.PathLike[str]]) -> TestRun | None:
    """Run the tests that go with ``paths``; None when there are none.

    A test file whose recorded pass still holds is counted, not run; every
    other one is run, and recorded when it passes.
    """
    tests = test_files_for(paths)
    if not tests:
        return None
    cache = OutcomeCache.open()
    cached = cache.passes(tests) if cache is not None else {}
    cached_passes = sum(cached.values())
    to_run = [test for test in tests if test not in cached]
    if not to_run:
        return TestRun(len(tests), cached_passes, 0, ())
    from .runner import RunReport, run_file  # the engine, only for files that must run

    results: list[Any] = []
    errors: list[Any] = []
    for test in to_run:
        inputs = cache.inputs(test) if cache is not None else None  # read before the run
        got, errs, _ = run_file(test, explain=False)
        results.extend(got)
        errors.extend(errs)
        if cache is not None and inputs is not None and got and not errs and all(r.passed for r in got):
            cache.remember(test, inputs, len(got))
    run = _findings(RunReport(tuple(str(t) for t in to_run), tuple(results), tuple(errors)))
    return replace(run, files=len(tests), passed=run.passed + cached_passes)


def _findings(report: RunReport) -> TestRun:
    """The warnings for a run's failures: cross-package where another package decides them, else policy-test."""
    from .runner import CaseResult

    blamer = _Blamer()
    blame: dict[str, list[tuple[CaseResult, set[str]]]] = {}
    kinds: dict[str, tuple[str, Scoped[Any]]] = {}
    own_failures: dict[str, list[Any]] = {}
    for result in report.results:
        if result.passed:
            continue
        culprits: list[str] = []
        if isinstance(result, CaseResult):
            culprits, decls, own = blamer.culprits(result)
            for culprit in culprits:
                blame.setdefault(culprit, []).append((result, own))
                kinds[culprit] = decls[culprit]
        if not culprits:
            own_failures.setdefault(result.file, []).append(result)
    findings: list[Finding] = []
    for culprit, results in blame.items():
        kind, scoped = kinds[culprit]
        per_file: dict[str, list[Any]] = {}
        for result, own in results:
            per_file.setdefault(result.file, [0, own])[0] += 1
        where = "; ".join(f"{n} in {file} ({', '.join(sorted(own))})" for file, (n, own) in per_file.items())
        first = results[0][0]
        findings.append(Finding(
            "cross-package",
            f"{kind} {culprit} changes {len(results)} decision(s) of other packages' policy tests: {where} "
            f"(first: {first.file}::{first.case.name}: {first.mismatches[0]})",
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
