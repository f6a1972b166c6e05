"""Checks that declared values are in range: hosting, budget limits and warnings, bias and drift metrics.

A stage of ``check.py``'s checker (it reports through it):

* ``unknown-hosting``: a model's hosting that is not internal or external;
* ``budget-no-limit``, ``limit-range``, ``percentage-range``: a budget with no
  limit, a limit of zero or less, a ``warn at`` outside 0..100%; ``duplicate-limit``
  (warning) for a unit and window limited twice;
* ``unknown-metric``: a bias or drift metric the reports do not compute;
  ``threshold-range`` and ``threshold-direction`` (warnings): a threshold that is
  always or never met, or that states the unhealthy side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast
from .diagnostics import suggest

if TYPE_CHECKING:
    from .check import _Checker

HOSTINGS = ("internal", "external")
BIAS_METRICS = ("disparate_impact", "demographic_parity", "equalized_odds")
DRIFT_METRICS = ("psi", "ks", "chi2")
# metrics whose value is a ratio or a difference of rates, so it lies in 0..1
UNIT_METRICS = frozenset({"disparate_impact", "demographic_parity", "equalized_odds", "ks"})
# the direction in which a threshold reads "healthy": ratios high, distances low
HEALTHY_HIGH = frozenset({"disparate_impact"})
HEALTHY_LOW = frozenset({"demographic_parity", "equalized_odds", "psi", "ks"})


def check_values(checker: _Checker) -> None:
    for s in checker.each(ast.ModelDecl):
        hosting = s.decl.hosting
        if hosting is not None and hosting not in HOSTINGS:
            checker.report("unknown-hosting", f"model '{s.decl.name.value}' has unknown hosting '{hosting}'",
                           s.decl.hosting_span or s.decl.name.span,
                           suggest(hosting, HOSTINGS) or "hosting is internal or external")
    for s in checker.each(ast.BudgetDecl):
        _budget_values(checker, s.decl)
    for s in checker.each(ast.BiasDecl):
        _metric(checker, s.decl, BIAS_METRICS)
        if s.decl.min_samples is not None and s.decl.min_samples < 1:
            checker.warn("threshold-range", f"min samples {s.decl.min_samples} makes every window count",
                         s.decl.name.span, "use at least 1")
    for s in checker.each(ast.DriftDecl):
        _metric(checker, s.decl, DRIFT_METRICS)


def _budget_values(checker: _Checker, budget: ast.BudgetDecl) -> None:
    if not budget.limits:
        checker.report("budget-no-limit", f"budget '{budget.name.value}' has no limit", budget.name.span,
                       "add a line such as 'limit 500 USD per day'")
    seen: set[tuple[str, str]] = set()
    for limit in budget.limits:
        if limit.amount <= 0:
            checker.report("limit-range",
                           f"limit {limit.amount:g} {limit.unit} per {limit.window} is not positive", limit.span,
                           "a limit of zero or less denies every request; use a deny rule for that")
        if (limit.unit, limit.window) in seen:
            checker.warn("duplicate-limit", f"budget '{budget.name.value}' limits {limit.unit} per "
                         f"{limit.window} twice", limit.span, "the lower limit alone decides; remove the other")
        seen.add((limit.unit, limit.window))
    if budget.warn_at is not None and not 0 <= budget.warn_at <= 100:
        checker.report("percentage-range", f"warn at {budget.warn_at:g}% is outside 0..100%",
                       budget.warn_at_span or budget.name.span,
                       "warn at is a share of the limit, such as 'warn at 80%'")


def _metric(checker: _Checker, decl: ast.BiasDecl | ast.DriftDecl, allowed: tuple[str, ...]) -> None:
    metric = decl.metric.value
    if metric not in allowed:
        what = "bias" if isinstance(decl, ast.BiasDecl) else "drift"
        checker.report("unknown-metric", f"unknown {what} metric '{metric}'", decl.metric.span,
                       suggest(metric, allowed) or f"{what} metrics are " + ", ".join(allowed))
        return
    threshold = decl.threshold
    if threshold.value < 0 or (metric in UNIT_METRICS and threshold.value > 1):
        limits = "0..1" if metric in UNIT_METRICS else "0 or more"
        checker.warn("threshold-range", f"{metric} lies in {limits}, so threshold {threshold.op} "
                     f"{threshold.value:g} is always or never met", threshold.span)
    elif (metric in HEALTHY_HIGH and threshold.op in ("<", "<=")) or (
        metric in HEALTHY_LOW and threshold.op in (">", ">=")
    ):
        better = "higher" if metric in HEALTHY_HIGH else "lower"
        checker.warn("threshold-direction", f"{metric} is better when {better}, but the threshold asks for "
                     f"{threshold.op} {threshold.value:g}", threshold.span,
                     "the threshold states the healthy range, e.g. 'threshold >= 0.8' or 'threshold < 0.2'")
