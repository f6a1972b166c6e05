"""A real ``policyengine inbox serve`` in a subprocess on a free 127.0.0.1 port, and runs waiting for it.

Shared by tests/test_inbox.py (httpx) and tests/test_inbox_browser.py (headless Chromium).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

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


class InboxServer:
    """``policyengine inbox serve --port 0`` in ``cwd`` on its policyengine.duckdb; stderr kept in ``lines``."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.lines: list[str] = []
        self.url = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "policyengine", "inbox", "serve", "--port", "0", *args],
                                     cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self._listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(60) or not self.url:
            self.stop()
            raise RuntimeError("inbox did not start:\n" + "\n".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if found:
                self.url = found.group(1)
                self._listening.set()
        self._listening.set()  # exited

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> InboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
