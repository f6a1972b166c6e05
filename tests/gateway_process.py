"""``policyengine gateway`` and the OpenAI-compatible upstream it calls, each a real process on 127.0.0.1.

Used by tests/test_gateway_*.py and benchmarks/bench_gateway.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from child_process import ListeningProcess, refused_start

UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "openai_upstream.py"


Process = ListeningProcess  # the name bench_gateway.py and the gateway tests use


def start_upstream(cwd: Path, record: Path | None = None, lifetime: float = 600) -> Process:
    command = [sys.executable, str(UPSTREAM_SCRIPT), "--lifetime", str(lifetime)]
    if record is not None:
        command += ["--record", str(record)]
    return Process(command, cwd, on_stderr=False)


def start_gateway(cwd: Path, config: Path, *extra: str) -> Process:
    command = [sys.executable, "-m", "policyengine", "gateway", "--config", str(config), "--port", "0", *extra]
    return Process(command, cwd, on_stderr=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def gateway_refused(cwd: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``gateway`` expected to refuse to start (``refused_start``)."""
    command = [sys.executable, "-m", "policyengine", "gateway", "--config", str(config), "--port", "0", *extra]
    return refused_start(command, cwd, "the gateway")


def received(record: Path) -> list[dict[str, Any]]:
    """Every request the upstream recorded, in order."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line]
