"""Shared-state costs: reserve+settle on each store, and a budgeted decision against ledger history.

Run by hand (not a test):  python benchmarks/bench_store.py [--postgres URL] [--n 2000]

* reserve+settle: one 1,000-token reservation settled at 1,000, timed as a pair,
  one thread (latency) and 8 and 32 threads (throughput), on the embedded ledger (a
  DuckDB file) and the PostgreSQL ledger. Without ``--postgres`` a throwaway
  server is started in a temp directory (as the tests do) and stopped after.
* budgeted decision: ``Policy.evaluate`` of a model call under 2 budgets on
  the shipped rules/, with 0, 1 month and 1 year of hourly usage already in
  the ledger (running totals: the cost must not grow with history).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from timing import in_threads, latencies_us, pct, postgres

SCOPE = "workflow:bench"


def pair(ledger) -> None:
    """One 1,000-token reservation settled at 1,000."""
    ledger.settle(ledger.reserve(SCOPE, "tokens", 1_000, limit=1e18, window="month"), 1_000)


def pairs(ledger, n: int) -> list[float]:
    """Latency (µs) of n reserve+settle pairs in one thread."""
    return latencies_us(n, lambda _: pair(ledger))


def throughput(ledger, threads: int, n_each: int) -> float:
    """reserve+settle pairs per second with ``threads`` threads."""
    return threads * n_each / in_threads(threads, lambda _: [pair(ledger) for _ in range(n_each)])


def bench_ledgers(postgres_url: str | None, n: int, workdir: Path) -> list[str]:
    from policyengine.store import open_store

    rows = ["| store | reserve+settle median / p99 (µs), 1 thread | pairs/s, 1 thread | pairs/s, 8 threads | "
            "pairs/s, 32 threads |", "|---|---|---|---|---|"]
    with postgres(postgres_url) as url:
        for name, state in (("embedded (DuckDB file)", str(workdir / "bench.duckdb")), ("PostgreSQL", url)):
            with open_store(state) as store:
                lat = pairs(store.ledger, n)
                one = 1e6 / statistics.mean(lat)
                many = throughput(store.ledger, 8, max(1, n // 8))
                most = throughput(store.ledger, 32, max(1, n // 32))
                rows.append(f"| {name} | {statistics.median(lat):.0f} / {pct(lat, 0.99):.0f} | {one:,.0f} | "
                            f"{many:,.0f} | {most:,.0f} |")
                print(rows[-1], flush=True)
    return rows


REQUEST = {"principal": {"id": "invoice_classifier", "type": "agent"}, "action": "invoke",
           "resource": {"kind": "model", "id": "classifier_small"},
           "context": {"tokens": 1000, "workflow": "invoice-exceptions"}}


def bench_history(workdir: Path) -> list[str]:
    from policyengine import InMemoryLedger, load_policy
    from policyengine.resources import data_path
    import duckdb

    from policyengine.store import packaged_sql
    from policyengine.store.embedded_ledger import EmbeddedLedger

    now = datetime(2026, 3, 10, 9, tzinfo=UTC)
    rows = ["| ledger | history (hourly charges) | budgeted decision median / p99 (µs) |", "|---|---|---|"]
    for hours, label in ((0, "none"), (24 * 31, "1 month"), (24 * 365, "1 year")):
        for name in ("in-memory", "embedded (DuckDB file)"):
            if name == "in-memory":
                ledger = InMemoryLedger()
                for h in range(hours):
                    for scope in ("workflow:invoice-exceptions", "model:classifier_small"):
                        ledger.charge(scope, "tokens", 1, now - timedelta(hours=h))
            else:  # hour buckets written in bulk as a ledger from before running totals; opening adds the totals
                path = workdir / f"h{hours}.duckdb"
                with duckdb.connect(str(path)) as con:
                    con.execute(packaged_sql("policyengine.store", "embedded/budget_create"))
                    con.execute("DELETE FROM budget_totals")
                    con.execute("INSERT INTO budget_usage SELECT s.scope, 'tokens', $now - to_hours(h), 1 "
                                "FROM range($hours) AS r(h), (VALUES ('workflow:invoice-exceptions'), "
                                "('model:classifier_small')) AS s(scope)", {"now": now.replace(tzinfo=None),
                                                                            "hours": hours})
                ledger = EmbeddedLedger(path)
            policy = load_policy(data_path("rules"), ledger=ledger)
            assert policy.evaluate(REQUEST, now=now).effect == "allow"
            times = latencies_us(20_000, lambda _: policy.evaluate(REQUEST, now=now))
            rows.append(f"| {name} | {label} | {statistics.median(times):.2f} / {pct(times, 0.99):.2f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", help="an existing server (default: start a throwaway one)")
    parser.add_argument("--n", type=int, default=2000, help="reserve+settle pairs per store")
    parser.add_argument("--ledgers-only", action="store_true", help="skip the budgeted-decision table")
    parser.add_argument("--decisions-only", action="store_true", help="only the budgeted-decision table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = [] if args.decisions_only else bench_ledgers(args.postgres, args.n, Path(tmp))
        history = [] if args.ledgers_only else bench_history(Path(tmp))
    print()
    print("\n".join(ledgers))
    print()
    print("\n".join(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
