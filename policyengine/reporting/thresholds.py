"""The one comparison of a metric with a threshold, for monitors, reports and policy tests.

Metrics are ratios and differences of counts in binary floating point, so a
value that is exactly on the line in decimal can land a hair off it: the
four-fifths rule's 0.64 / 0.8 computes as 0.7999999999999999. A value within
``TOLERANCE`` (relative to the threshold, absolute below 1) of the threshold
counts as equal to it, so the boundary case is decided as written: ``>= 0.8``
holds at 0.8. Ratios of counts that are really different differ by far more
(at least 1 / n**2 for n decisions), so no real difference is hidden.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

TOLERANCE = 1e-9

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}


def on_the_line(value: float, threshold: float) -> bool:
    """Whether ``value`` equals ``threshold`` up to ``TOLERANCE``."""
    return abs(value - threshold) <= TOLERANCE * max(1.0, abs(threshold))


def holds(value: float, op: str, threshold: float) -> bool:
    """``value OP threshold``, with a value on the line (``on_the_line``) compared as the threshold itself."""
    return _OPS[op](threshold if on_the_line(value, threshold) else value, threshold)
