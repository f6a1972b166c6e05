"""Compliance, bias and drift reports over the audit log (and offline CSVs).

The public API of the reporting area: bias and drift metrics computed in SQL
inside DuckDB, named SQL reports from ``reports/``, and their renderings.
"""

from __future__ import annotations

from .bias import BiasResult, GroupStats, bias_from_csv, compute_bias
from .drift import DriftResult, compute_drift, drift_from_csv
from .errors import ReportError

__all__ = [
    "BiasResult",
    "DriftResult",
    "GroupStats",
    "ReportError",
    "bias_from_csv",
    "compute_bias",
    "compute_drift",
    "drift_from_csv",
]
