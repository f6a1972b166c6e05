"""Approver inbox latency: the page of N pending approvals, and one approval through the web form.

Run by hand (not in CI):  python benchmarks/bench_inbox.py [--runs 200] [--repeat 10]
Results go in benchmarks/README.md ("Approver inbox" section).

A temporary directory gets N invoice runs waiting for a senior analyst (the
real CLI, simulator models), a sign-in token for alice, and a real
`policyengine inbox serve` subprocess; an httpx client signs in, then times
GET / (every pending approval, with its recorded request and reasons) and
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "invoices.json").write_text(json.dumps([{**INVOICE, "id": f"INV-{i:05d}"} for i in range(args.runs)]))
        (work / "sure.yaml").write_text("models:\n  classifier_small: {accuracy: 1.0, confidence: 0.95}\n")
        pe("run", "invoice-exceptions", "--input", "invoices.json", "--providers", "sure.yaml", cwd=work)
        token = pe("inbox", "token", "--user", "alice", cwd=work).strip()
        with InboxServer(work) as server, httpx.Client(base_url=server.url, timeout=120) as c:
            c.post("/login", data={"token": token})
            pages = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                page = c.get("/")
                pages.append(time.perf_counter() - started)
            pending = re.findall(r"name='run_id' value='([^']+)'", page.text)
            csrf = re.search(r"name='csrf' value='([^']+)'", page.text)[1]
            decisions = []
            for run_id in pending[:args.repeat]:
                started = time.perf_counter()
                c.post("/decide", data={"run_id": run_id, "action": "approve", "csrf": csrf})
                decisions.append(time.perf_counter() - started)
            flashed = re.findall(r"role='status'>([^<]*)<", c.get("/").text)
        print(f"pending approvals on the page: {len(pending)} ({len(page.content):,} bytes)")
        print(f"GET / median {statistics.median(pages) * 1000:.0f} ms, max {max(pages) * 1000:.0f} ms")
        print(f"POST /decide (approve) median {statistics.median(decisions) * 1000:.0f} ms, "
              f"max {max(decisions) * 1000:.0f} ms; last: {flashed[-1] if flashed else '?'}")
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
