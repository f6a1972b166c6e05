"""Rolled audit segments: append rate with rolling against one file, the cost of one roll, verify time over N segments.

Run by hand (not in CI):  python benchmarks/bench_segments.py [--records 200000] [--segments 10,50]
Results go in benchmarks/README.md ("Audit segments" section).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from policyengine.audit import AuditLog, generate_key, verify_database
from policyengine.audit.segments import RollPolicy, SegmentedLog, verify_segments

DECISION = {
    "request": {"principal": {"id": "user-7", "type": "user", "roles": ["analyst"], "attrs": {}},
                "action": "read", "resource": {"kind": "dataset", "id": "erp/invoices/42", "attrs": {}},
                "data": {"classification": "internal"}, "context": {}},
    "decision": {"effect": "allow", "reasons": [{"rule": "finance.invoices.analysts_read_invoices"}],
                 "obligations": [], "route": None, "policy_hash": "9f2c"},
}


def append_rate(log: AuditLog | SegmentedLog, records: int) -> float:
    started = time.perf_counter()
    for i in range(records):
        log.append("decision", actor=f"user-{i % 50}", payload=DECISION, policy_hash="9f2c")
    log.flush()
    return records / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--roll", type=int, default=20_000, help="records per segment for the append run")
    parser.add_argument("--segments", default="10,50", help="segment counts for the verify runs")
    parser.add_argument("--per-segment", type=int, default=2_000, help="records per segment for the verify runs")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = generate_key(root / "k.key")
        with AuditLog(root / "one.duckdb", key) as log:
            one = append_rate(log, args.records)
        print(f"append, one file:             {one:10,.0f} records/s ({args.records:,} records)")
        folder = root / "rolled"
        folder.mkdir()
        rolls: list[float] = []
        with SegmentedLog(folder, "audit", key, roll=RollPolicy(records=args.roll)) as log:
            original = log.roll_now

            def timed(reason: str = "requested") -> Path:
                started = time.perf_counter()
                try:
                    return original(reason)
                finally:
                    rolls.append(time.perf_counter() - started)

            log.roll_now = timed  # type: ignore[method-assign]
            rolled = append_rate(log, args.records)
        print(f"append, rolled every {args.roll:,}: {rolled:10,.0f} records/s ({len(rolls)} rolls, "
              f"{rolled / one:.0%} of one file)")
        if rolls:
            print(f"one roll in the append path (seal + final checkpoint, open next + first checkpoint; old file closed in background): median {sorted(rolls)[len(rolls) // 2] * 1e3:.1f} ms, "
                  f"max {max(rolls) * 1e3:.1f} ms")
        for count in (int(n) for n in args.segments.split(",")):
            folder = root / f"verify{count}"
            folder.mkdir()
            total = count * args.per_segment
            with SegmentedLog(folder, "audit", key, roll=RollPolicy(records=args.per_segment)) as log:
                for _ in range(total - (count - 1) * 2 - 1):  # started and sealed records fill the rest
                    log.append("decision", payload=DECISION)
            started = time.perf_counter()
            report = verify_segments(folder, [key.public])
            seconds = time.perf_counter() - started
            assert report.ok, report.summary()
            records = sum(s["records"] for s in report.segments)
            single = root / f"single{count}.duckdb"
            with AuditLog(single, key) as log:
                for _ in range(records):
                    log.append("decision", payload=DECISION)
            started = time.perf_counter()
            assert verify_database(single, [key.public]).ok
            alone = time.perf_counter() - started
            print(f"verify --dir, {len(report.segments)} segments, {records:,} records: {seconds:.2f} s "
                  f"({seconds / len(report.segments) * 1e3:.0f} ms per segment); the same records in one file: "
                  f"{alone:.2f} s")


if __name__ == "__main__":
    main()
