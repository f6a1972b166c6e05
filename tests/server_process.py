"""A real ``policyengine serve`` in a subprocess on a free 127.0.0.1 port (shared by tests/test_server_*.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from policyengine.audit import generate_key

RULES = Path(__file__).resolve().parents[1] / "rules"  # the shipped rules

ALLOW = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
         "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
DENY = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "delete",
        "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
AUTHZEN_ALLOW = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"]}},
                 "action": {"name": "read"}, "resource": {"type": "dataset", "id": "erp/invoices/2026-0042"}}
AUTHZEN_DENY = {**AUTHZEN_ALLOW, "action": {"name": "delete"}}


class Server:
    """``policyengine serve ARGS --port 0`` in ``cwd``; its stderr is kept in ``lines``."""

    def __init__(self, cwd: Path, *args: str, key: str = "audit.key", db: str = "audit.duckdb") -> None:
        self.cwd = cwd
        self.db = cwd / db
        self.key = cwd / key
        if not self.key.exists():
            generate_key(self.key)
        self.lines: list[str] = []
        command = [sys.executable, "-m", "policyengine", "serve", "--port", "0", "--db", db, "--key", key, *args]
        self.proc = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(60) or not self.url:
            self.stop()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines))
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"listening on (https?://[\d.]+:\d+)", line)
            if found:
                self.url = found.group(1)
                self._listening.set()
        self._listening.set()  # exited

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=body, **kwargs)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no stderr line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if hasattr(self, "client"):
            self.client.close()
        return code

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def audit_records(db: Path) -> dict[int, tuple[str, dict[str, Any]]]:
    """seq -> (event, payload) of every committed record (open after the server stopped)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT seq, event, payload FROM audit_log ORDER BY seq").fetchall()
    finally:
        con.close()
    return {seq: (event, json.loads(payload)) for seq, event, payload in rows}


def verify(cwd: Path, db: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", "audit", "verify", "--db", str(db),
                           "--pubkey", f"{key}.pub.pem"], cwd=cwd, capture_output=True, text=True, timeout=120)
