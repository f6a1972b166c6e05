"""What scoping costs: decisions with a scoped package in the set, and `check` running the policy tests.

    python benchmarks/bench_scoping.py [--requests 20000]

1. Decisions per second on the shipped rules/ for requests of other packages,
   with rules/growth (scoped: its deny, residency and gate are guarded) and
   without it: the guard is one dict lookup per candidate declaration.
2. `check rules/` as the CLI does it: parse + check, then the policy tests
   (policyengine.testing.cross_package.run_policy_tests), against `--no-tests`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from policyengine import load_policy
from policyengine.check import check_policy
from policyengine.loader import load_files
from policyengine.testing.cross_package import run_policy_tests

RULES = Path(__file__).resolve().parent.parent / "rules"

REQUESTS = [
    {"principal": {"id": "ana", "roles": ["analyst"]}, "action": "read",
     "resource": {"kind": "dataset", "id": "erp/invoices/2026-1"}, "data": {"classification": "internal"}},
    {"principal": {"id": "mo", "roles": ["marketer"]}, "action": "read",
     "resource": {"kind": "dataset", "id": "crm/segments/eu"}, "data": {"contains_minors": False}},
    {"principal": {"id": "sue", "roles": ["supply_manager"]}, "action": "place_order",
     "resource": {"kind": "tool", "id": "scm/purchase-orders"}, "context": {"amount": 100}},
]  # other packages' requests: what a scoped package must not slow down


def _rate(policy, n: int) -> float:
    for r in REQUESTS:
        policy.evaluate(r)
    start = time.perf_counter()
    for i in range(n):
        policy.evaluate(REQUESTS[i % len(REQUESTS)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    start = time.perf_counter()
    loaded = load_files([RULES])
    result = check_policy(loaded.files)
    checked = time.perf_counter() - start
    run = run_policy_tests([RULES])
    total = time.perf_counter() - start
    assert result.policy is not None and run is not None and run.failed == 0
    print(f"check --no-tests rules/: {checked:.2f} s; check rules/ (with {run.passed} test cases): {total:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        without = Path(tmp) / "rules"
        shutil.copytree(RULES, without)
        shutil.rmtree(without / "growth")
        scoped, bare = load_policy(RULES), load_policy(without)
        best = {"with": 0.0, "without": 0.0}
        for _ in range(5):  # alternate, keep the best of each: the machine is shared
            best["with"] = max(best["with"], _rate(scoped, args.requests))
            best["without"] = max(best["without"], _rate(bare, args.requests))
        print(f"decisions/s with scoped rules/growth:  {best['with']:,.0f} (best of 5)")
        print(f"decisions/s without rules/growth:      {best['without']:,.0f} (best of 5)")


if __name__ == "__main__":
    main()
