"""Benchmark: bias and drift over 1,000,000 decisions (target: under 2 s each).

Run by hand: ``python benchmarks/bench_reports.py [--rows N]``. Builds an audit
database of N ``model_call`` events (same columns as ``audit_log``) and a pair of
CSV files, then times, best of three:

- bias from the audit log, from the audit_facts columns (as AuditLog writes them) and from the
  JSON payloads (``use_facts=False``; the only way before audit_facts) -> bias_input -> metrics SQL;
- drift (PSI + KS) of a numeric payload value from the audit log, two windows;
- drift (PSI + chi2) of a categorical payload value;
- offline bias from a CSV of N rows, and offline drift of two CSVs of N/2 rows.
Results go to benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb

from policyengine.audit.facts import FactsWriter
from policyengine.reporting.audit_source import bias_from_audit, drift_from_audit
from policyengine.reporting.bias import bias_from_csv
from policyengine.reporting.db import open_readonly
from policyengine.reporting.drift import drift_from_csv

# Generated data, not product SQL: a deterministic stand-in for a month of calls.
FILL = """
CREATE TABLE audit_log AS
SELECT
    i AS seq,
    TIMESTAMPTZ '2026-10-01 00:00:00+00' + to_microseconds(CAST(i * (60 * 86400e6 / $n) AS BIGINT)) AS ts,
    'bench' AS origin, 'model_call' AS event, 'agent_' || (i % 7) AS actor, 'wf' AS workflow,
    'r' || (i // 10) AS run_id,
    CAST(json_object(
        'model', 'classifier_small', 'provider', 'local', 'tokens', 100 + i % 900,
        'cost_usd', 0.00002, 'latency_ms', 40.0, 'status', 'ok', 'step', 'classify',
        'subject', json_object('vendor_region', ['EU', 'US', 'APAC', 'LATAM'][1 + (CAST(hash(i) % 4 AS BIGINT))]),
        'outcome', CASE WHEN (CAST(hash(i * 7) % 100 AS BIGINT)) < 40 + 5 * (CAST(hash(i) % 4 AS BIGINT)) THEN 'auto_resolved' ELSE 'manual' END,
        'output', json_object('confidence', round((CAST(hash(i * 13) % 10000 AS BIGINT)) / 10000.0 + (i > $n / 2)::INT * 0.03, 4),
                              'channel', ['api', 'email', 'phone', 'portal'][1 + (CAST(hash(i * 3) % 4 AS BIGINT))]),
        'label', CASE WHEN (CAST(hash(i * 11) % 100 AS BIGINT)) < 45 THEN 'auto_resolved' ELSE 'manual' END
    ) AS JSON) AS payload,
    'sha256:bench' AS policy_hash, 'k1' AS key_id, 'leaf' AS leaf_hash
FROM range($n) t(i);
"""

CSV_BIAS = """
COPY (SELECT ['EU', 'US', 'APAC', 'LATAM'][1 + (CAST(hash(i) % 4 AS BIGINT))] AS region,
             CASE WHEN (CAST(hash(i * 7) % 100 AS BIGINT)) < 40 + 5 * (CAST(hash(i) % 4 AS BIGINT)) THEN 'approved' ELSE 'declined' END AS decision,
             CASE WHEN (CAST(hash(i * 11) % 100 AS BIGINT)) < 45 THEN 'approved' ELSE 'declined' END AS truth
      FROM range($n) t(i)) TO '{path}' (HEADER);
"""

CSV_DRIFT = """
COPY (SELECT round((CAST(hash(i * 13) % 10000 AS BIGINT)) / 100.0 + $shift, 2) AS amount FROM range($n) t(i)) TO '{path}' (HEADER);
"""


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    n = ap.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.duckdb"
        t = time.perf_counter()
        con = duckdb.connect(str(db))
        con.execute(FILL, {"n": n})
        con.execute(CSV_BIAS.format(path=Path(tmp) / "bias.csv"), {"n": n})
        con.execute(CSV_DRIFT.format(path=Path(tmp) / "ref.csv"), {"n": n // 2, "shift": 0.0})
        con.execute(CSV_DRIFT.format(path=Path(tmp) / "cur.csv"), {"n": n // 2, "shift": 3.0})
        print(f"setup: {n:,} model_call events and CSVs in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        FactsWriter(con)  # what AuditLog does on opening a log written before audit_facts: derive them
        con.close()
        print(f"audit_facts derived from the {n:,} payloads in {time.perf_counter() - t:.1f} s")

        ro = open_readonly(db)
        start, split, end = datetime(2026, 10, 1), datetime(2026, 10, 31), datetime(2026, 12, 1)
        cases = {}
        for source, facts in (("audit_facts", True), ("payloads", False)):
            cases[f"bias from audit log, {source} (DI, DP, EO, 4 groups)"] = lambda facts=facts: bias_from_audit(
                ro, model="classifier_small", group="subject.vendor_region", positives=["auto_resolved"],
                start=start, end=end, min_samples=100, use_facts=facts)
            cases[f"drift from audit log, {source}, numeric (PSI + KS)"] = lambda facts=facts: drift_from_audit(
                ro, model="classifier_small", path="output.confidence", start=start, split=split, end=end,
                use_facts=facts)
            cases[f"drift from audit log, {source}, categorical (PSI + chi2)"] = lambda facts=facts: drift_from_audit(
                ro, model="classifier_small", path="output.channel", start=start, split=split, end=end,
                metric="chi2", use_facts=facts)
        cases |= {
            "offline bias, CSV": lambda: bias_from_csv(
                Path(tmp) / "bias.csv", outcome="decision", positive="approved", group="region", label="truth"),
            "offline drift, 2 CSVs of n/2 (PSI + KS)": lambda: drift_from_csv(
                Path(tmp) / "ref.csv", Path(tmp) / "cur.csv", "amount"),
        }
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
              f"duckdb {duckdb.__version__}, load average {os.getloadavg()[0]:.2f}")
        print(f"| case ({n:,} decisions) | best of 3 |")
        print("|---|---|")
        for name, fn in cases.items():
            print(f"| {name} | {best_of(3, fn):.2f} s |")
        b = cases["bias from audit log, audit_facts (DI, DP, EO, 4 groups)"]()
        assert b == cases["bias from audit log, payloads (DI, DP, EO, 4 groups)"](), "facts and payloads disagree"
        print(f"check: disparate impact {b.disparate_impact:.4f}, groups {[g.n for g in b.groups]} (same from both)")
        ro.close()


if __name__ == "__main__":
    main()
