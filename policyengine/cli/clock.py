"""``--now`` on the command line: the rule for commands that write.

``--now`` makes a command act as of another time. On a read-only command that is
a harmless "as of" view. On a command that writes (approve, reject, runs expire,
eval --audit, monitor --record) it would let anyone approve a run years after
its deadline and have the record say it was on time, so it is refused unless
``--clock-override`` is also given. That flag is for tests and drills only, and
the override is recorded in the audit log (event ``clock_override``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from ..clock import parse_time


def typed_time(text: str | None, option: str) -> datetime | None:
    """A time typed for ``option``, or a usage error (exit 2) naming what was typed."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def clock_override_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--clock-override", "clock_override", is_flag=True,
                        help="Test-only: let --now set the clock of a command that writes (recorded in the "
                             "audit log as clock_override).")(f)


def writing_now(text: str | None, clock_override: bool, command: str) -> datetime | None:
    """``--now`` for a command that writes: refused (exit 1) without ``--clock-override``."""
    now = typed_time(text, "--now")
    if now is not None and not clock_override:
        click.echo(f"error: {command} --now {text}: --now is for read-only views, tests and dry runs; a command "
                   f"that writes records the real time (--clock-override, test-only and recorded in the audit "
                   f"log, allows it)", err=True)
        sys.exit(1)
    return now
