"""Time whole CLI commands, start to exit, against ``python -c pass`` (issue 16 item 4).

Run by hand: ``python benchmarks/bench_startup.py [--runs N]``. Every command is a
new process (``python -m policyengine ...``, run in the checkout this script lies
in, so it times that checkout's code) on its ``rules/`` folder:

- ``--help``;
- ``check --no-tests rules/`` (parse cache warm);
- ``check rules/`` with the policy-test outcome cache warm (the usual re-run);
- ``check rules/`` with ``POLICYENGINE_NO_CACHE=1`` (every test file run, nothing parsed from cache);
- ``eval`` of one request on stdin.

The caches live in a temporary ``XDG_CACHE_HOME``, warmed by one run before the
timed ones; Python's bytecode is cached too (``PYTHONPYCACHEPREFIX`` in the same
folder), as in an installed package, even when ``PYTHONDONTWRITEBYTECODE`` is set. Prints the median and the minimum of ``--runs`` runs, the machine,
the date and the load average (the machine may be shared: say so with the numbers).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = str(ROOT / "rules")
REQUEST = ('{"principal": {"type": "agent", "id": "invoice_classifier"}, "action": "read", '
           '"resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}')


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "unknown"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], stdin: str | None, runs: int) -> tuple[float, float, float]:
    """(median wall, min wall, median CPU) seconds of ``runs`` runs; the command must exit 0.

    CPU time (user + system of the process) is reported beside wall time because
    it moves less when other work shares the machine.
    """
    seconds, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, cwd=ROOT)
        seconds.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - start_cpu)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr or done.stdout}")
    return statistics.median(seconds), min(seconds), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    cli = [py, "-m", "policyengine"]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as cache:
        # as installed: bytecode cached (here in a temporary prefix, not beside the sources)
        env = {**os.environ, "XDG_CACHE_HOME": cache, "PYTHONPYCACHEPREFIX": os.path.join(cache, "pyc")}
        env.pop("POLICYENGINE_NO_CACHE", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        no_cache = {**env, "POLICYENGINE_NO_CACHE": "1"}
        commands = [
            ("python -c pass", [py, "-c", "pass"], env, None),
            ("policyengine --help", [*cli, "--help"], env, None),
            ("check --no-tests rules/", [*cli, "check", "--no-tests", RULES], env, None),
            ("check rules/ (test outcomes cached)", [*cli, "check", RULES], env, None),
            ("check rules/ (POLICYENGINE_NO_CACHE=1)", [*cli, "check", RULES], no_cache, None),
            ("eval, one request on stdin", [*cli, "eval", "--rules", RULES], env, REQUEST),
        ]
        for _, argv, command_env, stdin in commands:  # warm the caches and the OS file cache
            subprocess.run(argv, env=command_env, input=stdin, capture_output=True, text=True, cwd=ROOT)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average before {_load()}")
        base = None
        for name, argv, command_env, stdin in commands:
            runs = max(3, args.runs // 3) if command_env is no_cache else args.runs
            median, least, cpu = timed(argv, command_env, stdin, runs)
            base = base or median
            print(f"{name:<42} median {median * 1000:7.1f} ms  min {least * 1000:7.1f} ms  "
                  f"CPU {cpu * 1000:7.1f} ms  ({median / base:4.1f}x python -c pass, {runs} runs)")
        print(f"load average after {_load()}")


if __name__ == "__main__":
    main()
