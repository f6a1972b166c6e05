"""What ``serve --shadow`` costs a live answer: the same server with and without a candidate policy.

Run by hand (not in CI):  python benchmarks/bench_shadow.py [--requests 2000]
Results go in benchmarks/README.md ("Shadow mode and model versions" section).

Two ``policyengine serve`` processes on the shipped rules, each with its own
audit log in a temp folder; one also decides every request under a candidate
(the shipped rules with the analysts' invoice reads denied), so every request
it answers also writes a ``shadow_diff`` event (the worst case). One client
sends the same request to both in alternation, sequentially, and the latency
of each answer (which waited for its durable audit record) is measured.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from policyengine.audit import generate_key

ROOT = Path(__file__).resolve().parents[1]
REQUEST = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
           "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}


def start(folder: Path, *args: str) -> tuple[subprocess.Popen, str]:
    generate_key(folder / "k.key")
    proc = subprocess.Popen([sys.executable, "-m", "policyengine", "serve", "--port", "0", "--db", "a.duckdb",
                             "--key", "k.key", "--no-access-log", "--rules", str(ROOT / "rules"), *args],
                            cwd=folder, stderr=subprocess.PIPE, text=True)
    url: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            found = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if found:
                url.append(found.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(60)
    if not url:
        proc.kill()
        raise SystemExit("server did not start")
    return proc, url[0]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        plain, shadowed = Path(tmp) / "plain", Path(tmp) / "shadow"
        plain.mkdir()
        shadowed.mkdir()
        candidate = shadowed / "candidate"
        shutil.copytree(ROOT / "rules", candidate)
        changed = 0
        for p in candidate.rglob("*.policy"):
            text = p.read_text()
            if 'to read dataset "erp/invoices/*"' in text:
                p.write_text(text.replace('analyst to read dataset "erp/invoices/*"',
                                          'analyst to read dataset "erp/invoices/none"'))
                changed += 1
        servers = [start(plain), start(shadowed, "--shadow", str(candidate))]
        try:
            clients = [httpx.Client(base_url=url, timeout=30) for _, url in servers]
            times: list[list[float]] = [[], []]
            for i in range(args.requests + 200):
                for which in (i % 2, 1 - i % 2):
                    started = time.perf_counter()
                    clients[which].post("/v1/decide", json=REQUEST).raise_for_status()
                    if i >= 200:  # warm-up
                        times[which].append((time.perf_counter() - started) * 1000)
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(30)
        import duckdb

        with duckdb.connect(str(shadowed / "a.duckdb"), read_only=True) as con:
            diffs = con.execute("SELECT count(*) FROM audit_log WHERE event = 'shadow_diff'").fetchone()[0]
        for name, t in zip(("serve", "serve --shadow"), times, strict=True):
            print(f"{name:<16} {len(t):,} answers: p50 {pct(t, 50):.2f} ms, p90 {pct(t, 90):.2f} ms, "
                  f"p99 {pct(t, 99):.2f} ms")
        print(f"shadow_diff events recorded: {diffs:,} (candidate files changed: {changed})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
