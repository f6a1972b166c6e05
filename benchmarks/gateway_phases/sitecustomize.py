"""Per-phase wall times of ``policyengine gateway`` calls, for ``bench_gateway.py --phases`` only.

Put on the gateway process's PYTHONPATH with ``GW_PHASES=FILE``: once
``policyengine.gateway.run`` is imported, the gateway's phase methods are
wrapped with timers, and FILE gets mean/p50/p99 per phase (first 200 calls
left out) every 2 s and at exit. Not shipped; it changes nothing without GW_PHASES.
"""

from __future__ import annotations

import atexit
import collections
import functools
import importlib.abc
import os
import sys
import threading
import time

_FILE = os.environ.get("GW_PHASES")
_SKIP = 200
_times: dict[str, list[float]] = collections.defaultdict(list)


def _dump() -> None:
    if not _times or not _FILE:
        return
    lines = []
    for name, values in list(_times.items()):
        kept = sorted(list(values)[_SKIP:]) or sorted(values)
        lines.append(f"{name:21s} n={len(kept):6d} mean={sum(kept) / len(kept) * 1e3:7.3f} "
                     f"p50={kept[len(kept) // 2] * 1e3:7.3f} p99={kept[int(len(kept) * 0.99)] * 1e3:7.3f} ms\n")
    with open(_FILE, "w", encoding="utf-8") as out:
        out.writelines(lines)


def _timed(cls: type, name: str, label: str) -> None:
    function = getattr(cls, name)
    if hasattr(function, "__code__") and function.__code__.co_flags & 0x80:  # a coroutine function
        @functools.wraps(function)
        async def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                _times[label].append(time.perf_counter() - started)
    else:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                _times[label].append(time.perf_counter() - started)
    setattr(cls, name, wrapper)


def _patch() -> None:
    from policyengine.gateway.app import GatewayApp
    from policyengine.gateway.providers import UpstreamClient
    from policyengine.server.audit_writer import DurableAudit

    for name, label in (("_read_body", "read body"), ("chat_completions", "handler (all)"),
                        ("_caller", "key lookup"), ("_body", "parse body"), ("_screen_prompt", "prompt guards"),
                        ("_candidates", "decide models"), ("_limit", "rate limits"), ("_reserve", "budget reserve"),
                        ("_settle", "budget settle"), ("_screen_response", "response guard+decide"),
                        ("_append", "audit append"), ("_audit_call", "audit (append+wait)")):
        _timed(GatewayApp, name, label)
    _timed(UpstreamClient, "post", "upstream call")
    _timed(DurableAudit, "durable", "durable wait")


class _OnGatewayImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's signature
        if name == "policyengine.gateway.run":
            sys.meta_path.remove(self)

            def when_loaded() -> None:
                while not hasattr(sys.modules.get(name), "run_gateway"):
                    time.sleep(0.01)
                _patch()

            threading.Thread(target=when_loaded, daemon=True).start()
        return None


def _every_2s() -> None:
    while True:
        time.sleep(2)
        _dump()


if _FILE:
    sys.meta_path.insert(0, _OnGatewayImport())
    atexit.register(_dump)
    threading.Thread(target=_every_2s, daemon=True).start()
