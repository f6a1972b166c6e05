"""A named report asked for a period that holds nothing, or given a period it does not read, refuses.

`report denials --param since=A --param until=B` with B before A printed 0 rows and
exit 0, which reads as "no denials"; `report denials --since A` ignored --since (an
option of bias, drift and evidence) and printed every row as if for the period.
Both are now one `error:` line, exit 1. Real audit database, real CLI processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_reporting import one_error_line, pe
from test_reports import write_audit_db

CASES = [
    # (arguments after `report NAME --db DB`, rows expected, or the error's words)
    (["denials", "--param", "since=2026-11-01", "--param", "until=2026-12-01"], 3, None),
    (["denials", "--param", "since=2026-11-02T11:00:00Z", "--param", "until=2026-11-02T13:01+01:00"], 1, None),
    (["denials"], 3, None),
    (["denials", "--param", "since=2026-12-01", "--param", "until=2026-11-01"], None, "the period is empty"),
    (["denials", "--param", "since=2026-11-20T12:00:00Z", "--param", "until=2026-11-20T13:00:00+01:00"], None,
     "the period is empty"),
    (["denials", "--param", "until=1969-12-31"], None, "the period is empty"),
    (["escalations", "--param", "since=2027-01-01", "--param", "until=2026-01-01"], None, "the period is empty"),
    (["alerts", "--param", "since=2027-01-01", "--param", "until=2026-01-01"], None, "the period is empty"),
    (["denials", "--since", "2027-01-01"], None, "--since: only bias, drift and evidence"),
    (["denials", "--until", "2026-01-01"], None, "--until: only bias, drift and evidence"),
    (["model_blocks", "--since", "2027-01-01", "--until", "2026-01-01"], None, "--since and --until"),
]


@pytest.mark.parametrize(("args", "rows", "error"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_named_report_period(tmp_path: Path, args: list[str], rows: int | None, error: str | None) -> None:
    db = write_audit_db(tmp_path / "audit.duckdb")
    r = pe("report", args[0], "--db", db, "--format", "json", *args[1:])
    if error is None:
        assert r.returncode == 0, r.stderr
        assert len(json.loads(r.stdout)) == rows, r.stdout
    else:
        assert error in one_error_line(r), r.stderr
