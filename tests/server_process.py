"""A real ``policyengine serve`` in a subprocess on a free 127.0.0.1 port (shared by tests/test_server_*.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx
from child_process import ListeningProcess

from policyengine.audit import generate_key

RULES = Path(__file__).resolve().parents[1] / "rules"  # the shipped rules

ALLOW = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
         "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
DENY = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "delete",
        "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
AUTHZEN_ALLOW = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"]}},
                 "action": {"name": "read"}, "resource": {"type": "dataset", "id": "erp/invoices/2026-0042"}}
AUTHZEN_DENY = {**AUTHZEN_ALLOW, "action": {"name": "delete"}}

# One budget of 10,000 tokens a month for role caller, and a call that asks 400 of it: races on reservations.
BUDGET_RACE = """
package race
role caller
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
budget shared
    for role caller
    limit 10_000 tokens per month
    on exceed deny
"""
BUDGETED_CALL = {"principal": {"id": "bob", "roles": ["caller"]}, "action": "invoke",
                 "resource": {"kind": "model", "id": "small"}, "context": {"tokens": 400}}


class Server(ListeningProcess):
    """``policyengine serve ARGS --port 0`` in ``cwd``; its stderr is kept in ``lines``."""

    def __init__(self, cwd: Path, *args: str, key: str = "audit.key", db: str = "audit.duckdb") -> None:
        self.db = cwd / db
        self.key = cwd / key
        if not self.key.exists():
            generate_key(self.key)
        command = [sys.executable, "-m", "policyengine", "serve", "--port", "0", "--db", db, "--key", key, *args]
        super().__init__(command, cwd, what="server")
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=body, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = super().stop(sig)
        if hasattr(self, "client"):
            self.client.close()
        return code


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
