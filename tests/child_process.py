"""A child process that serves on 127.0.0.1 and says ``listening on http(s)://HOST:PORT`` once it does.

The one start/stop for the tests' real servers: ``policyengine serve``
(tests/server_process.py), ``inbox serve`` (tests/inbox_process.py), ``gateway``
and its upstream (tests/gateway_process.py); ``refused_start`` runs one that must refuse to start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Self

_LISTENING = re.compile(r"listening on (https?://[\d.]+:\d+)")


class ListeningProcess:
    """``command`` in ``cwd``; every line of the stream it prints on (stderr or stdout) is kept in ``lines``.

    The constructor returns once the first ``listening on`` line gave ``url``; if the process exits or says
    nothing within 60 s it is stopped and ``RuntimeError`` says ``{what} did not start`` with what it printed.
    """

    def __init__(self, command: list[str], cwd: Path, *, on_stderr: bool = True, env: dict[str, str] | None = None,
                 what: str | None = None) -> None:
        self.cwd = cwd
        self.stream = "stderr" if on_stderr else "stdout"
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
            raise RuntimeError(f"{what or command[:4]} did not start:\n" + "\n".join(self.lines))

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            found = _LISTENING.search(line)
            if found and not self.url:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # exited

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        """The first line kept that matches ``pattern``, waiting up to ``timeout`` s (else AssertionError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no {self.stream} line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (if still running) and wait up to 30 s, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refused_start(command: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    """A server expected to refuse to start: it must exit on its own (one that starts fails the test)."""
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as running:
        raise AssertionError(f"{what} started instead of refusing:\n{running.stderr}") from None
