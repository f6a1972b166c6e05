"""Run policy test cases against the real engine and say which passed and why not.

Each test file's policy is loaded once (the engine caches compiled policies by
content); each case then gets a fresh in-memory budget ledger holding only the
usage it declares, so cases never leak state into one another. Everything a
test file names (expected rule ids, route models, budgets) is checked against
the loaded policy before any case runs, so a typo in a test is an error at its
line rather than a test that can never pass, or one that passes for the wrong
reason.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..budgets import InMemoryLedger, scope_key
from ..diagnostics import PolicyError, Span
from ..engine import _batch
from ..jsontext import DECODER, may_hold_bad_numbers
from .cases import (
    Case,
    ExpectedObligation,
    MonitorCase,
    TestFile,
    TestFileError,
    Usage,
    load_test_file,
)
from .discovery import discover

if TYPE_CHECKING:
    from .coverage import CoverageReport

# Called once per decided case: (policy, request, decision) — how coverage listens in.
Observer = Callable[[Any, dict[str, Any], Any, Any], None]  # (policy, request, decision, the case's now)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: passed, or the list of ways the decision differed."""

    file: str
    case: Case
    mismatches: tuple[str, ...]
    decision: Mapping[str, Any]
    explanation: str
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.case.name}"


@dataclass(frozen=True, slots=True)
class FileError:
    """A test file that could not be run (bad YAML, bad field, policy that does not load)."""

    file: str
    line: int
    message: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class RunReport:
    """Everything one ``policyengine test`` run found."""

    files: tuple[str, ...]
    results: tuple[Any, ...]  # CaseResult, and MonitorCaseResult for bias and drift cases
    errors: tuple[FileError, ...]
    deselected: int = 0
    coverage: CoverageReport | None = None  # when coverage was requested

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return not self.errors and self.failed == 0

    def summary(self) -> str:
        """The last line of the run: ``N passed, N failed``, then ``, N error(s)`` when a file could not be run.

        The counts are those of the JUnit XML: each test file that could not be
        run is one error, so ``tests = passed + failed + errors``.
        """
        text = f"{self.passed} passed, {self.failed} failed"
        if self.errors:
            text += f", {len(self.errors)} error" + ("s" if len(self.errors) != 1 else "")
        return text


class _CaseLedger:
    """A ledger that forwards to the current case's own ``InMemoryLedger``.

    The policy is loaded once per test file with this as its ledger; swapping
    ``current`` gives every case a fresh, empty budget state.
    """

    def __init__(self) -> None:
        self.current = InMemoryLedger()

    def usage(self, scope_key: str, unit: str, window_start: datetime) -> float:
        return self.current.usage(scope_key, unit, window_start)

    def charge(self, scope_key: str, unit: str, amount: float, at: datetime | None = None) -> None:
        self.current.charge(scope_key, unit, amount, at)


# --- selecting cases ---------------------------------------------------------------------


def matches_keyword(nodeid: str, keyword: str | None) -> bool:
    """``-k``: a case-insensitive substring of ``file::case name``; ``not X`` inverts."""
    if not keyword:
        return True
    text = keyword.strip()
    negate = text.lower().startswith("not ")
    if negate:
        text = text[4:].strip()
    found = text.lower() in nodeid.lower()
    return found != negate


# --- running -----------------------------------------------------------------------------


def run_paths(
    paths: Sequence[str | Path], *, keyword: str | None = None, observer: Observer | None = None,
    explain: bool = True, fail_fast: bool = False,
) -> RunReport:
    """Discover the test files under ``paths`` and run every selected case.

    ``explain=False`` skips building failure explanations and ``fail_fast`` stops
    at the first failure or error: both are for callers that only need to know
    *whether* the tests pass, such as the mutation tests.
    """
    files = discover(paths)
    results: list[Any] = []
    errors: list[FileError] = []
    deselected = 0
    for path in files:
        got, errs, skipped = run_file(path, keyword=keyword, observer=observer, explain=explain, fail_fast=fail_fast)
        results.extend(got)
        errors.extend(errs)
        deselected += skipped
        if fail_fast and (errs or any(not r.passed for r in got)):
            break
    return RunReport(tuple(str(f) for f in files), tuple(results), tuple(errors), deselected)


def run_file(
    path: str | Path, *, keyword: str | None = None, observer: Observer | None = None,
    explain: bool = True, fail_fast: bool = False,
) -> tuple[list[Any], list[FileError], int]:
    """Run one test file: (results, errors, number of cases ``keyword`` left out)."""
    try:
        test_file = load_test_file(path)
        policy, ledger = _load(test_file)
        _validate(test_file, policy)
    except TestFileError as exc:
        return [], [FileError(exc.span.file, exc.span.line, exc.message)], 0
    except _LoadFailed as exc:
        return [], [exc.error], 0
    results: list[Any] = []
    deselected = 0
    for case in test_file.cases:
        if not matches_keyword(f"{test_file.path}::{case.name}", keyword):
            deselected += 1
            continue
        result = run_case(test_file, case, policy, ledger, observer, explain=explain)
        results.append(result)
        if fail_fast and not result.passed:
            return results, [], deselected
    for monitor in test_file.monitors:
        if not matches_keyword(f"{test_file.path}::{monitor.name}", keyword):
            deselected += 1
            continue
        try:
            got = run_monitor(test_file, monitor, policy, observer)
        except TestFileError as exc:  # sample rows the monitor's database cannot hold
            return results, [FileError(exc.span.file, exc.span.line, exc.message)], deselected
        results.append(got)
        if fail_fast and not got.passed:
            break
    return results, [], deselected


def run_monitor(test_file: TestFile, case: MonitorCase, policy: Any, observer: Observer | None = None) -> Any:
    """Run one monitor case (``policyengine.testing.monitors``) and tell coverage which rule it judged."""
    # imported late: DuckDB only when a file has monitor cases
    from .monitors import run_monitor_case

    result = run_monitor_case(test_file, case, policy)
    mark = getattr(observer, "monitored", None)
    if mark is not None:
        mark(policy, case.rule)
    return result


class _LoadFailed(Exception):
    def __init__(self, error: FileError):
        self.error = error


def _load(test_file: TestFile) -> tuple[Any, _CaseLedger]:
    from ..engine import (
        load_policy,  # imported late: the pytest plugin must import cheaply
    )

    ledger = _CaseLedger()
    try:
        policy = load_policy(list(test_file.policy_files), ledger=ledger)
    except PolicyError as exc:
        from ..diagnostics import render_findings

        first = exc.findings[0] if exc.findings else None
        where = f" ({first.span}: {first.message})" if first else ""
        raise _LoadFailed(
            FileError(
                test_file.path,
                test_file.policy_span.line,
                f"the policy under test does not load: {len(exc.findings)} error(s){where}",
                render_findings(exc.findings),
            )
        ) from None
    except Exception as exc:  # noqa: BLE001 - a bug in the engine, not in the test: report it here and run the other files
        raise _LoadFailed(
            FileError(
                test_file.path,
                test_file.policy_span.line,
                f"internal error while loading the policy under test: {type(exc).__name__}: {exc}",
            )
        ) from None
    return policy, ledger


def known_ids(policy: Any) -> dict[str, str]:
    """Every declaration id a test may name, mapped to its kind (rule, gate, budget, ...)."""
    ps = policy.policy_set
    kinds = {
        "rule": ps.rules,
        "residency": ps.residencies,
        "budget": ps.budgets,
        "escalate": ps.escalations,
        "route": ps.routes,
    }
    return {s.id: kind for kind, items in kinds.items() for s in items}


def _validate(test_file: TestFile, policy: Any) -> None:
    """Check every name a test file uses against the policy; raise at the first unknown one."""
    ids = known_ids(policy)
    models = set(policy.policy_set.models)
    for case in test_file.cases:
        exp = case.expect
        for rule in exp.rules or ():
            if not rule.startswith("<") and rule not in ids:
                raise TestFileError(exp.rules_span or case.span, f"case {case.name!r}: unknown rule id {rule!r} in 'rules'{_hint(rule, ids)}")
        if exp.check_route and exp.route is not None and exp.route not in models:
            raise TestFileError(case.span, f"case {case.name!r}: 'route' names unknown model {exp.route!r}")
        for usage in case.usage:
            check_usage_unit(usage, policy)
    if test_file.monitors:
        from .monitors import validate_monitor_case

        for monitor in test_file.monitors:
            validate_monitor_case(monitor, policy, _hint)


def _hint(name: str, ids: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(ids), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_usage_target(target: str, policy: Any, span: Span) -> str:
    """A ledger scope key from ``usage``: given as ``kind:value``, or a budget's id or name."""
    if ":" in target:
        return target
    scope = _usage_budget(target, policy, span).decl.scope
    return scope_key(scope.kind, scope.value)


def _usage_budget(target: str, policy: Any, span: Span) -> Any:
    """The one budget a ``usage`` target names by id or short name."""
    budgets = policy.policy_set.budgets
    found = [b for b in budgets if b.id == target] or [b for b in budgets if b.decl.name.value == target]
    if len(found) != 1:
        what = "ambiguous" if found else "unknown"
        names = ", ".join(b.id for b in budgets) or "none declared"
        raise TestFileError(span, f"{what} budget {target!r} in 'usage' (budgets: {names}; or write a scope such as workflow:NAME)")
    return found[0]


_UNIT = re.compile(r"tokens|[A-Za-z]{3}")  # what a budget limit may count (as the rule syntax accepts)


def check_usage_unit(usage: Usage, policy: Any) -> None:
    """Raise unless ``usage`` names a known target in a unit some budget on it counts.

    A budget named by id or short name counts the units of its limits; a scope
    (``kind:value``) the units of the budgets on it. Usage in any other unit is
    never read by the engine, so it would silently not matter.
    """
    span = usage.unit_span or usage.span
    if ":" in usage.target:
        budgets = [b for b in policy.policy_set.budgets if scope_key(b.decl.scope.kind, b.decl.scope.value) == usage.target]
        what = f"scope {usage.target!r}"
    else:
        budgets = [_usage_budget(usage.target, policy, usage.span)]
        what = f"budget {budgets[0].id!r}"
    units = list(dict.fromkeys(limit.unit for b in budgets for limit in b.decl.limits))
    if not budgets:  # no budget reads this scope: at least the unit must be one a limit can count
        if _UNIT.fullmatch(usage.unit):
            return
        raise TestFileError(span, f"unknown unit {usage.unit!r} in 'usage' of {what} (no budget has this scope; "
                                  f"a limit counts 'tokens' or a currency code such as 'USD')"
                                  f"{_unit_hint(usage.unit, ['tokens'])}")
    if usage.unit not in units:
        counts = ", ".join(units) or "nothing"
        raise TestFileError(span, f"unknown unit {usage.unit!r} in 'usage' of {what} (its limits count: {counts})"
                                  f"{_unit_hint(usage.unit, units)}")


def _unit_hint(unit: str, units: list[str]) -> str:
    """Did-you-mean for a unit; case is ignored when matching (``usd`` means ``USD``)."""
    lowered = {u.lower(): u for u in units}
    if unit.lower() in lowered:
        return f" (did you mean {lowered[unit.lower()]!r}?)"
    import difflib

    close = difflib.get_close_matches(unit.lower(), list(lowered), n=1)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def run_case(test_file: TestFile, case: Case, policy: Any, ledger: _CaseLedger, observer: Observer | None = None,
             *, explain: bool = True) -> CaseResult:
    """Decide one case with a fresh ledger and compare the decision with the expectation."""
    start = time.perf_counter()
    ledger.current = InMemoryLedger()
    for usage in case.usage:
        key = resolve_usage_target(usage.target, policy, usage.span)
        ledger.current.charge(key, usage.unit, usage.amount, case.now)
    request = case.request
    unreadable = _unreadable(request)
    if unreadable is not None:  # NaN, an integer beyond 2**53: eval denies it unread, and so does the test
        decision = policy.malformed([unreadable])
    else:
        if policy.policy_set.declares_versions:  # stamped with the version it uses, as eval and serve stamp it
            request = _stamped(policy, request)
        decision = policy.evaluate(request, now=case.now)
    actual = decision.to_dict()
    mismatches = [*undeclared_names(request, policy, actual), *compare(case, actual)]
    if observer is not None:
        observer(policy, request, decision, case.now)
    explanation = explain_decision(policy, request, case, actual) if mismatches and explain else ""
    return CaseResult(test_file.path, case, tuple(mismatches), actual, explanation, time.perf_counter() - start)


def _unreadable(request: Mapping[str, Any]) -> str | None:
    """Why ``eval`` would deny ``request`` before any rule reads it, as JSON text: a number without an IEEE-754
    double (``.nan`` and ``.inf`` in YAML, an integer beyond 2**53), a lone surrogate; None when it would not.
    Decided by the engine's own reader of JSON input (``engine._batch``)."""
    text = json.dumps(request, ensure_ascii=False)
    value = DECODER.decode(text) if may_hold_bad_numbers(text) else json.loads(text)  # json's C speed when it can
    return next(iter(_batch(1, value, text=text))).error


@functools.cache
def _default_versions() -> Any:
    """The ``models_registry.Resolver`` with no promotions, one for the run: it keeps each policy's declared
    versions and aliases (by policy hash), which a resolver made per case would work out again every case."""
    from ..models_registry import Resolver

    return Resolver()


def _stamped(policy: Any, request: Mapping[str, Any]) -> Any:
    """``request`` with the model or agent version it uses, under the default aliases (a test has no log of
    promotions: ``production`` is the first declared version), as ``eval`` without ``--audit`` decides it."""
    return _default_versions()(policy, request)[0]


# --- comparing -------------------------------------------------------------------------


def undeclared_names(request: Mapping[str, Any], policy: Any, decision: Mapping[str, Any]) -> list[str]:
    """Roles, agents and models a case's request names that the policy under test does not declare.

    A typo (``roles: [marketr]``) would otherwise be decided as a stranger and a
    case expecting ``deny`` would pass for the wrong reason. A name that the
    decision itself names (the engine refuses a role differing only in case, and
    denies undeclared agents, with that reason) is what the case tests, and is
    not reported.
    """
    ps = policy.policy_set
    principal = request.get("principal") or {}
    resource = request.get("resource") or {}
    said = " ".join(str(r.get("message", "")) for r in decision.get("reasons", ()))
    out = [f"request: role {r!r} is not declared in the policy under test"
           for r in principal.get("roles") or ()
           if isinstance(r, str) and r not in ps.role_closure and repr(r) not in said]
    agent, model = principal.get("id"), resource.get("id")
    if principal.get("type") == "agent" and isinstance(agent, str) and agent not in ps.agents and agent not in said:
        out.append(f"request: agent {agent!r} is not declared in the policy under test")
    if resource.get("kind") == "model" and isinstance(model, str) and model not in ps.models and model not in said:
        out.append(f"request: model {model!r} is not declared in the policy under test")
    return out


def deciding_rules(decision: Mapping[str, Any]) -> list[str]:
    return sorted({r["rule"] for r in decision.get("reasons", ())})


def compare(case: Case, decision: Mapping[str, Any]) -> list[str]:
    """How the decision differs from what the case expects (empty when it passes)."""
    exp = case.expect
    out: list[str] = []
    if decision.get("effect") != exp.effect:
        out.append(f"effect: expected {exp.effect}, got {decision.get('effect')}")
    if exp.rules is not None:
        want, got = sorted(set(exp.rules)), deciding_rules(decision)
        if want != got:
            out.append(f"deciding rules: expected {want}, got {got}")
    if exp.check_route and decision.get("route") != exp.route:
        out.append(f"route: expected {exp.route}, got {decision.get('route')}")
    if exp.cites:
        cited = {c for r in decision.get("reasons", ()) for c in r.get("cites", ())}
        missing = [c for c in exp.cites if c not in cited]
        if missing:
            out.append(f"citations: expected {missing} among {sorted(cited)}")
    if exp.obligations is not None:
        problem = _compare_obligations(exp.obligations, list(decision.get("obligations", ())))
        if problem:
            out.append(problem)
    return out


def _obligation_matches(want: ExpectedObligation, got: Mapping[str, Any]) -> bool:
    if got.get("kind") != want.kind:
        return False
    for key, value in want.fields:
        actual = got.get(key)
        if isinstance(value, bool) or isinstance(actual, bool):  # true is no 1, and 0 no false
            if actual is not value:
                return False
        elif isinstance(value, (int, float)) and isinstance(actual, (int, float)):
            if abs(float(value) - float(actual)) > 1e-9 * max(1.0, abs(float(value))):
                return False
        elif actual != value:
            return False
    return True


def _compare_obligations(want: Sequence[ExpectedObligation], got: list[Mapping[str, Any]]) -> str | None:
    remaining = list(got)
    missing = []
    for w in want:
        hit = next((g for g in remaining if _obligation_matches(w, g)), None)
        if hit is None:
            missing.append(w.describe())
        else:
            remaining.remove(hit)
    if not missing and not remaining:
        return None
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if remaining:
        parts.append("unexpected " + ", ".join(_show_obligation(g) for g in remaining))
    return "obligations: " + "; ".join(parts)


def _show_obligation(o: Mapping[str, Any]) -> str:
    main = {"approval_required": ("gate", "role"), "budget_warning": ("budget", "unit", "window", "percent")}
    keys = main.get(str(o.get("kind")), tuple(k for k in o if k != "kind"))
    return f"{o.get('kind')}(" + ", ".join(f"{k}={o.get(k)!r}" for k in keys) + ")"


# --- explaining ------------------------------------------------------------------------


def explain_decision(policy: Any, request: Mapping[str, Any], case: Case, decision: Mapping[str, Any]) -> str:
    """The decision's own account of itself, for a failure report."""
    lines = [f"effect {decision.get('effect')}, route {decision.get('route') or '-'}"]
    for r in decision.get("reasons", ()):
        where = f"{r.get('file')}:{r.get('line')}" if r.get("file") else "built-in"
        cand = f" [candidate {r['candidate']}]" if r.get("candidate") else ""
        cites = f" (cites: {', '.join(r['cites'])})" if r.get("cites") else ""
        lines.append(f"  reason {r['rule']} at {where}{cand}: {r.get('message')}{cites}")
    for o in decision.get("obligations", ()):
        lines.append(f"  obligation {_show_obligation(o)}")
    for e in decision.get("errors", ()):
        lines.append(f"  error {e}")
    trace = _trace(policy, request, case)
    if trace:
        lines.append("trace:")
        lines.extend(f"  {t}" for t in trace)
    return "\n".join(lines)


def _trace(policy: Any, request: Mapping[str, Any], case: Case) -> list[str]:
    explain_fn = getattr(policy, "explain", None)
    if explain_fn is None:
        return []
    try:
        lines = list(explain_fn(request, now=case.now).trace)
    except Exception:  # noqa: BLE001 - the trace is a courtesy; never let it hide the failure itself
        return []
    # Keep the near misses: a big policy lists hundreds of rules about other principals,
    # actions or resource kinds, which say nothing about this case.
    far = ("no match: principal ", "no match: action ", "no match: resource kind ")
    kept = [t for t in lines if not any(f in t for f in far)]
    if len(kept) < len(lines):
        kept.append(f"({len(lines) - len(kept)} rules about other principals, actions or kinds not shown;"
                    " see `policyengine eval --explain`)")
    return kept


def request_text(case: Case) -> str:
    """The request one field a line, leaving out empty parts, as JSON values."""
    request = case.request
    lines = []
    for key in ("principal", "action", "resource", "data", "context", "approvals"):
        value = request.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v not in ({}, [], None)}
        if value in ({}, [], None):
            continue
        lines.append(f"{key}: {json.dumps(value, sort_keys=True)}")
    return "\n".join(lines)
