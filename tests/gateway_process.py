"""``policyengine gateway`` and the OpenAI-compatible upstream it calls, each a real process on 127.0.0.1.

Used by tests/test_gateway_*.py and benchmarks/bench_gateway.py.
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
from typing import Any

UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "openai_upstream.py"


class Process:
    """A child process that prints ``listening on http://HOST:PORT`` on ``stream`` once it serves."""

    def __init__(self, command: list[str], cwd: Path, *, on_stderr: bool, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.url = ""
        pipe = {"stderr": subprocess.PIPE, "stdout": subprocess.DEVNULL} if on_stderr else \
            {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
        self.proc = subprocess.Popen(command, cwd=cwd, text=True, env=env, **pipe)  # type: ignore[call-overload]
        self._ready = threading.Event()
        threading.Thread(target=self._drain, args=(self.proc.stderr if on_stderr else self.proc.stdout,),
                         daemon=True).start()
        if not self._ready.wait(60) or not self.url:
            self.stop()
            raise RuntimeError(f"{command[:4]} did not start:\n" + "\n".join(self.lines))

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if found and not self.url:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_upstream(cwd: Path, record: Path | None = None, lifetime: float = 600) -> Process:
    command = [sys.executable, str(UPSTREAM_SCRIPT), "--lifetime", str(lifetime)]
    if record is not None:
        command += ["--record", str(record)]
    return Process(command, cwd, on_stderr=False)


def start_gateway(cwd: Path, config: Path, *extra: str) -> Process:
    command = [sys.executable, "-m", "policyengine", "gateway", "--config", str(config), "--port", "0", *extra]
    return Process(command, cwd, on_stderr=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def received(record: Path) -> list[dict[str, Any]]:
    """Every request the upstream recorded, in order."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line]
