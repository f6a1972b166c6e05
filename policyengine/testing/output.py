"""The text a person reads after ``policyengine test``, modelled on pytest's.

One progress line per test file (``.`` passed, ``F`` failed, ``E`` not runnable),
then each failure with its request, expected versus actual and the decision's
explanation, then coverage when asked, and last the line ``N passed, N failed`` (``, N error(s)`` added when a file could not be run)
that people and scripts look for.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Sequence

from .coverage import CoverageReport
from .monitors import MonitorCaseResult, sample_text
from .mutations import MutationReport
from .runner import CaseResult, RunReport, deciding_rules, request_text


def _rule(title: str, char: str = "=") -> str:
    width = max(40, min(shutil.get_terminal_size((88, 20)).columns, 100))
    text = f" {title} "
    left = max(2, (width - len(text)) // 2)
    return char * left + text + char * max(2, width - left - len(text))


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line if line else line for line in text.splitlines())


def render_monitor_failure(r: MonitorCaseResult, *, header: bool = True) -> str:
    exp = r.case.expect
    want = [f"breach {str(exp.breach).lower()}" if exp.error is None else f"error containing {exp.error!r}"]
    if exp.check_value:
        want.append(f"value {exp.value if exp.value is not None else 'undefined'}"
                    + (f" ± {exp.tolerance:g}" if exp.value is not None else ""))
    if exp.action is not None:
        want.append(f"action {exp.action}")
    res = r.result
    got = [f"breach {str(res.breach).lower()}" if res.error is None else f"error {res.error!r}",
           f"value {f'{res.value:.12g}' if res.value is not None else 'undefined'}", f"action {res.action}"]
    lines = [
        *([_rule(r.nodeid, "_")] if header else []),
        *(f"{r.file}:{r.case.span.line}: {m}" for m in r.mismatches),
        f"sample ({len(r.case.rows)} row(s), {sum(row.count for row in r.case.rows)} model call(s)), now {r.case.now.isoformat()}:",
        _indent(sample_text(r.case)),
        f"expected: {', '.join(want)}",
        f"actual:   {', '.join(got)}",
        "explanation:",
        _indent(r.explanation),
    ]
    return "\n".join(lines)


def render_failure(r: CaseResult | MonitorCaseResult, *, header: bool = True) -> str:
    if isinstance(r, MonitorCaseResult):
        return render_monitor_failure(r, header=header)
    exp = r.case.expect
    want: list[str] = [exp.effect]
    got: list[str] = [str(r.decision.get("effect"))]
    if exp.rules is not None:
        want.append(f"rules {sorted(set(exp.rules))}")
        got.append(f"rules {deciding_rules(r.decision)}")
    if exp.check_route:
        want.append(f"route {exp.route}")
        got.append(f"route {r.decision.get('route')}")
    if exp.cites:
        want.append(f"cites {list(exp.cites)}")
        got.append("cites " + str(sorted({c for x in r.decision.get("reasons", ()) for c in x.get("cites", ())})))
    if exp.obligations is not None:
        want.append("obligations [" + ", ".join(o.describe() for o in exp.obligations) + "]")
        got.append(f"{len(r.decision.get('obligations', ()))} obligation(s)")
    lines = [
        *([_rule(r.nodeid, "_")] if header else []),
        *(f"{r.file}:{r.case.span.line}: {m}" for m in r.mismatches),
        "request:",
        _indent(request_text(r.case)),
        f"expected: {', '.join(want)}",
        f"actual:   {', '.join(got)}",
        "explanation:",
        _indent(r.explanation),
    ]
    if r.case.usage:
        lines.insert(lines.index("request:"), "usage before the case: " + ", ".join(f"{u.target} {u.amount:g} {u.unit}" for u in r.case.usage))
    return "\n".join(lines)


def render_coverage(cov: CoverageReport) -> str:
    decl_hit = len(cov.decls) - len(cov.missed_decls)
    clause_hit = len(cov.clauses) - len(cov.missed_clauses)
    lines = [
        _rule("coverage"),
        f"declarations: {decl_hit}/{len(cov.decls)} exercised ({cov.decl_percent:.1f}%)",
        f"when clauses: {clause_hit}/{len(cov.clauses)} held at least once ({cov.clause_percent:.1f}%)",
    ]
    for d in cov.missed_decls:
        lines.append(f"{d.where()}: {d.kind} {d.id} not exercised by any test")
    for c in cov.missed_clauses:
        lines.append(f"{c.where()}: when clause `{c.text}` of {c.decl_id} never held in any test")
    return "\n".join(lines)


def render_report(report: RunReport, *, verbose: bool = False, fail_under: float | None = None,
                  fail_under_clauses: float | None = None, mutations: Sequence[MutationReport] = ()) -> str:
    """The whole run as text; the last line is always ``report.summary()``."""
    monitors = sum(1 for r in report.results if isinstance(r, MonitorCaseResult))
    head = f"policyengine test: {len(report.files)} test file(s), {len(report.results)} case(s)"
    if monitors:
        head += f" ({monitors} of bias/drift monitors)"
    if report.deselected:
        head += f", {report.deselected} deselected by -k"
    out = [head]
    by_file: dict[str, list[CaseResult | MonitorCaseResult]] = defaultdict(list)
    for r in report.results:
        by_file[r.file].append(r)
    errors = {e.file for e in report.errors}
    for file in report.files:
        if verbose:
            for r in by_file.get(file, []):
                out.append(f"{r.nodeid} {'PASSED' if r.passed else 'FAILED'}")
        elif file in by_file or file in errors:  # files whose cases -k left out are not listed
            marks = "".join("." if r.passed else "F" for r in by_file.get(file, []))
            out.append(f"{file} {marks}{'E' if file in errors else ''}".rstrip())
    if report.errors:
        out.append(_rule("ERRORS"))
        for e in report.errors:
            out.append(str(e))
            if e.details:
                out.append(_indent(e.details))
    failures = [r for r in report.results if not r.passed]
    if failures:
        out.append(_rule("FAILURES"))
        out.extend(render_failure(r) for r in failures)
    if report.coverage is not None:
        out.append(render_coverage(report.coverage))
        below = coverage_shortfall(report.coverage, fail_under, fail_under_clauses)
        if below:
            out.append(below)
    if mutations:
        out.append(render_mutations(mutations))
    if report.errors:
        out.append(f"{len(report.errors)} test file(s) could not be run")
    out.append(report.summary())
    return "\n".join(out)


def render_mutations(reports: Sequence[MutationReport]) -> str:
    lines = [_rule("mutations")]
    total = sum(r.total for r in reports)
    caught = sum(r.caught for r in reports)
    lines.append(f"{caught}/{total} single changes of the rule files made a test fail")
    for r in reports:
        if not r.baseline_ok:
            lines.append("FAIL: the tests do not pass in a copy of the folder (does it hold every rule file they load?)")
        for m in r.survivors:
            lines.append(f"{m.label}: no test noticed this change")
    return "\n".join(lines)


def coverage_shortfall(cov: CoverageReport, fail_under: float | None, fail_under_clauses: float | None = None) -> str | None:
    """A message when coverage is below a ``--fail-under`` bar, else None."""
    problems = []
    if fail_under is not None and cov.decl_percent + 1e-9 < fail_under:
        problems.append(f"FAIL: declaration coverage {cov.decl_percent:.1f}% is below --fail-under {fail_under:g}%")
    if fail_under_clauses is not None and cov.clause_percent + 1e-9 < fail_under_clauses:
        problems.append(f"FAIL: when-clause coverage {cov.clause_percent:.1f}% is below --fail-under-clauses {fail_under_clauses:g}%")
    return "\n".join(problems) or None
