"""A real ``policyengine inbox serve`` in a subprocess on a free 127.0.0.1 port, and runs waiting for it.

Shared by tests/test_inbox.py (httpx) and tests/test_inbox_browser.py (headless Chromium).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.child_process import ListeningProcess
from tests.test_cli_workflows import INVOICE, SURE, pe


def start_waiting_run(work: Path, *args: str, requested_by: str = "operator", item_id: str = "INV-T1") -> str:
    """Run one large invoice in ``work`` (its policyengine.duckdb, or ``args``' --db/--state); it waits for a
    senior analyst. Its run id."""
    (work / "invoice.json").write_text(json.dumps([{**INVOICE, "id": item_id}]))
    (work / "sure.yaml").write_text(SURE)
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--as",
             requested_by, "--json", *args, cwd=work)
    (run,) = json.loads(out.stdout)["runs"]
    assert run["status"] == "waiting_approval", run
    return run["run_id"]


def mint(work: Path, user: str) -> str:
    """``policyengine inbox token --user USER`` in ``work``: the token it prints."""
    return pe("inbox", "token", "--user", user, cwd=work).stdout.strip()


def run_status(work: Path, run_id: str, *args: str) -> dict:
    return json.loads(pe("runs", "show", run_id, "--json", *args, cwd=work).stdout)


class InboxServer(ListeningProcess):
    """``policyengine inbox serve --port 0`` in ``cwd`` on its policyengine.duckdb; stderr kept in ``lines``."""

    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__([sys.executable, "-m", "policyengine", "inbox", "serve", "--port", "0", *args], cwd,
                         what="inbox")
