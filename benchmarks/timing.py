"""The timing loops the benchmarks share: latency samples, threads started at once, a PostgreSQL to run against.

Imported by the bench_*.py scripts beside it (run by hand, never timed in tests).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def latencies_us(n: int, op: Callable[[Any], object], prepare: Callable[[int], Any] | None = None) -> list[float]:
    """Microseconds of ``n`` calls ``op(prepare(i))`` (``prepare`` untimed; without it ``op(i)``)."""
    out = []
    for i in range(n):
        arg = prepare(i) if prepare is not None else i
        t = time.perf_counter()
        op(arg)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def in_threads(threads: int, work: Callable[[int], object]) -> float:
    """Seconds from releasing ``threads`` threads at once, ``work(k)`` each, until the last one ends."""
    gate = threading.Barrier(threads + 1)

    def run(k: int) -> None:
        gate.wait()
        work(k)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    gate.wait()
    t = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs``, nearest rank."""
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def postgres(url: str | None) -> AbstractContextManager[str]:
    """``url``, or a throwaway server started in a temp directory (as the tests do) and stopped after."""
    if url is not None:
        return nullcontext(url)
    from services import running_postgres

    return running_postgres()
