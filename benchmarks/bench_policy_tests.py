"""How long policy tests take: the shipped suite, a large generated suite, and the mutation run.

Run by hand: ``python benchmarks/bench_policy_tests.py``. Results go in
benchmarks/README.md ("Policy tests" section).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp())  # a private parse cache

from policyengine.testing.coverage import CoverageCollector
from policyengine.testing.mutations import mutants
from policyengine.testing.runner import run_paths


def timed(fn, repeat: int = 5) -> tuple[float, float]:
    """(first run, median of the following runs) in seconds."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs)


def big_suite(root: Path, n: int) -> Path:
    """A test file of ``n`` cases cycling through routine requests of the finance package."""
    shapes = [
        ("allow", "principal: {{id: ana, roles: [analyst]}}\n    action: read\n    resource: dataset erp/invoices/{i}"),
        ("deny", "principal: {{id: ana, roles: [analyst]}}\n    action: write\n    resource: dataset erp/invoices/{i}"),
        ("escalate", ("principal: agent invoice_classifier\n    action: approve_payment\n    resource: tool erp/payments\n"
                      "    data: {{vendor_age_days: 400}}\n    context: {{amount: {a}, currency: EUR}}")),
    ]
    lines = ["policy: ..", "cases:"]
    for i in range(n):
        effect, body = shapes[i % 3]
        lines.append(f"  - name: case {i}\n    {body.format(i=i, a=10_001 + i)}\n    expect: {effect}")
    path = root / "finance" / "big_test.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    rules = REPO / "rules"
    report = run_paths([rules], explain=False)
    n = len(report.results)
    first, warm = timed(lambda: run_paths([rules]))
    print(f"shipped suite: {n} cases, first run {first * 1000:.0f} ms, then median {warm * 1000:.0f} ms "
          f"({warm / n * 1e6:.0f} us/case)")
    _, cov = timed(lambda: run_paths([rules], observer=CoverageCollector()))
    print(f"shipped suite with coverage: median {cov * 1000:.0f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rules"
        shutil.copytree(rules, root)
        for size in (1_000, 10_000):
            path = big_suite(root, size)
            first, warm = timed(lambda path=path: run_paths([path], explain=False), repeat=3)
            print(f"generated suite: {size} cases, first {first:.2f} s, then median {warm:.2f} s "
                  f"({warm / size * 1e6:.0f} us/case)")
            path.unlink()

        all_mutants = [(p, m) for p in sorted(root.rglob("*.policy")) for m in mutants(p.name, p.read_text())]
        t = time.perf_counter()
        caught = 0
        for path, m in all_mutants:
            original = path.read_text()
            path.write_text(m.text)
            own = sorted(path.parent.glob(path.stem + "_test.yaml"))
            caught += not run_paths([*own, root], explain=False, fail_fast=True).ok
            path.write_text(original)
        took = time.perf_counter() - t
        print(f"mutation run: {len(all_mutants)} mutants, {caught} caught, {took:.1f} s "
              f"({took / len(all_mutants) * 1000:.0f} ms/mutant)")


if __name__ == "__main__":
    main()
