"""policyengine: policy-as-code governance for enterprise AI.

The public API is ``load_policy(paths)`` and ``Policy.evaluate(request)``; the
names below are imported lazily so that ``import policyengine`` (and every CLI
command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_policy": "engine",
    "Policy": "engine",
    "BlockList": "engine",
    "Explanation": "engine",
    "Decision": "decision",
    "Request": "decision",
    "Reason": "decision",
    "BudgetWarning": "decision",
    "ApprovalRequired": "decision",
    "BudgetLedger": "budgets",
    "InMemoryLedger": "budgets",
    "DuckDBLedger": "budgets",
    "PolicyError": "diagnostics",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .budgets import BudgetLedger, DuckDBLedger, InMemoryLedger
    from .decision import ApprovalRequired, BudgetWarning, Decision, Reason, Request
    from .diagnostics import PolicyError
    from .engine import BlockList, Explanation, Policy, load_policy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'policyengine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
