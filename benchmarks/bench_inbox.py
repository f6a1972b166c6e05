"""Approver inbox latency: the page of N pending approvals, and one approval through the web form.

Run by hand (not in CI):  python benchmarks/bench_inbox.py [--runs 200] [--repeat 10] [--against /work/main]
Results go in benchmarks/README.md ("Approver inbox" section).

A temporary directory gets N invoice runs waiting for a senior analyst (the
real CLI, simulator models), a sign-in token for alice, and a real
`policyengine inbox serve` subprocess; an httpx client signs in, then times
GET / (every pending approval, with its recorded request and reasons; with
--against, that checkout's server and this one's in turn on the same database,
with the server's CPU time a page) and
POST /decide (approve: opens the database for writing, loads the rules, checks
four-eyes and the role, records and resumes the run, closes the database).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.inbox_process import InboxServer  # noqa: E402 - the tests' real server helper

INVOICE = {"vendor": "Acme Metals", "vendor_country": "DE", "vendor_region": "EU", "amount": 25_000.0,
           "currency": "EUR", "po_number": "PO-41000", "classification": "confidential", "true_exception": "none",
           "vendor_age_days": 900, "vendor_status": "active"}


def pe(*args: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def server_cpu(server: InboxServer) -> float:
    """CPU seconds (user + system) the inbox server process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_pages(work: Path, token: str, repeat: int, pythonpath: str) -> tuple[list[float], float, httpx.Response]:
    """GET / ``repeat`` times from an inbox server importing policyengine from ``pythonpath``.

    The wall time of each, the server's CPU seconds per page, and the last page.
    """
    os.environ["PYTHONPATH"] = pythonpath  # the server subprocess inherits it
    with InboxServer(work) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        c.post("/login", data={"token": token})
        c.get("/")  # warm: imports, the rules, the first open of the database
        walls, cpu0 = [], server_cpu(server)
        for _ in range(repeat):
            started = time.perf_counter()
            page = c.get("/")
            walls.append(time.perf_counter() - started)
        return walls, (server_cpu(server) - cpu0) / repeat, page


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--against", type=Path, help="another checkout (e.g. main): its inbox server and this one's "
                                                     "serve the same database in turn, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --against")
    args = parser.parse_args()
    ours = os.environ.get("PYTHONPATH", str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "invoices.json").write_text(json.dumps([{**INVOICE, "id": f"INV-{i:05d}"} for i in range(args.runs)]))
        (work / "sure.yaml").write_text("models:\n  classifier_small: {accuracy: 1.0, confidence: 0.95}\n")
        pe("run", "invoice-exceptions", "--input", "invoices.json", "--providers", "sure.yaml", cwd=work)
        token = pe("inbox", "token", "--user", "alice", cwd=work).strip()
        sides = {"this": ours} if args.against is None else {"against": str(args.against.resolve()), "this": ours}
        walls: dict[str, list[float]] = {side: [] for side in sides}
        cpus: dict[str, list[float]] = {side: [] for side in sides}
        bodies: dict[str, bytes] = {}
        for _ in range(args.rounds if args.against is not None else 1):
            for side, path in sides.items():
                w, cpu, page = time_pages(work, token, args.repeat, path)
                walls[side] += w
                cpus[side].append(cpu)
                bodies[side] = re.sub(rb"name='csrf' value='[^']+'", b"", page.content)
        os.environ["PYTHONPATH"] = ours
        with InboxServer(work) as server, httpx.Client(base_url=server.url, timeout=120) as c:
            c.post("/login", data={"token": token})
            page = c.get("/")
            pending = re.findall(r"name='run_id' value='([^']+)'", page.text)
            csrf = re.search(r"name='csrf' value='([^']+)'", page.text)[1]
            decisions = []
            for run_id in pending[:args.repeat]:
                started = time.perf_counter()
                c.post("/decide", data={"run_id": run_id, "action": "approve", "csrf": csrf})
                decisions.append(time.perf_counter() - started)
            flashed = re.findall(r"role='status'>([^<]*)<", c.get("/").text)
        print(f"pending approvals on the page: {len(pending)} ({len(page.content):,} bytes)")
        for side, path in sides.items():
            print(f"GET / [{side}: {path}] median {statistics.median(walls[side]) * 1000:.0f} ms, "
                  f"max {max(walls[side]) * 1000:.0f} ms, server CPU {statistics.median(cpus[side]) * 1000:.0f} ms "
                  f"a page (median of {len(cpus[side])} rounds of {args.repeat})")
        if len(bodies) > 1:
            print("pages identical (but for the CSRF token):", len(set(bodies.values())) == 1)
        print(f"POST /decide (approve) median {statistics.median(decisions) * 1000:.0f} ms, "
              f"max {max(decisions) * 1000:.0f} ms; last: {flashed[-1] if flashed else '?'}")
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
