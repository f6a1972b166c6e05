"""The one start/stop of the tests' real servers (tests/child_process.py): what each kind of child gives."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from child_process import ListeningProcess

SAY = "import sys, time; out = sys.{stream}; print({line!r}, file=out, flush=True); {then}"
STAY = "print('later', file=out, flush=True); time.sleep(60)"

# (case, stream the child prints on, stream read, what it prints, then, the url found or the start error)
CASES = [
    ("stderr", "stderr", "stderr", "listening on http://127.0.0.1:5 (pid 1)", STAY, "http://127.0.0.1:5"),
    ("stdout", "stdout", "stdout", "listening on http://127.0.0.1:6", STAY, "http://127.0.0.1:6"),
    ("https, the first line", "stderr", "stderr", "listening on https://127.0.0.1:7",
     "print('listening on http://127.0.0.1:8', file=out, flush=True); " + STAY, "https://127.0.0.1:7"),
    ("exits before listening", "stderr", "stderr", "boom", "sys.exit(3)", RuntimeError("thing did not start:\nboom")),
    ("listens on the stream not read", "stdout", "stderr", "listening on http://127.0.0.1:9", "sys.exit(0)",
     RuntimeError("thing did not start:")),
]


@pytest.mark.parametrize(("stream", "reads", "line", "then", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_child_is_ready_once_it_says_where_it_listens(tmp_path: Path, stream: str, reads: str, line: str,
                                                         then: str, expected: str | Exception) -> None:
    on_stderr = reads == "stderr"
    command = [sys.executable, "-c", SAY.format(stream=stream, line=line, then=then)]
    if isinstance(expected, Exception):
        with pytest.raises(RuntimeError) as raised:
            ListeningProcess(command, tmp_path, on_stderr=on_stderr, what="thing")
        assert str(raised.value).startswith(str(expected))
        return
    with ListeningProcess(command, tmp_path, on_stderr=on_stderr, what="thing") as child:
        assert child.url == expected and child.cwd == tmp_path
        assert child.wait_for_line("^later$") == "later"
        with pytest.raises(AssertionError, match=f"no {stream} line matching 'never'"):
            child.wait_for_line("never", timeout=0.2)
    assert child.proc.returncode == -signal.SIGTERM  # stopped on leaving the block
    assert child.stop() == -signal.SIGTERM  # stopping again is harmless
