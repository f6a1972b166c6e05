"""Audit trail throughput: appends per second with signed checkpoints, and verify time.

Run by hand (not in CI):  python benchmarks/bench_audit.py [--records 1000000]
Results go in benchmarks/README.md ("Audit trail" section).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from policyengine.audit import AuditLog, generate_key, verify_database


def model_call(i: int) -> dict:
    """A payload shaped like docs/audit-events.md's model_call."""
    return {
        "model": "classifier_small", "provider": "local", "tokens": 800 + i % 400, "cost_usd": 0.00016,
        "latency_ms": 41.5, "status": "ok", "step": "classify", "subject": {"vendor_region": "EU"},
        "outcome": "auto_resolved", "output": {"confidence": 0.93},
    }


def decision(i: int) -> dict:
    return {
        "request": {"principal": {"id": f"user-{i % 50}", "type": "user", "roles": ["analyst"], "attrs": {}},
                    "action": "read", "resource": {"kind": "dataset", "id": f"erp/invoices/{i}", "attrs": {}},
                    "data": {"classification": "internal"}, "context": {"workflow": "invoice-exceptions"}},
        "decision": {"effect": "allow", "reasons": [{"rule": "finance.invoices.analysts_read_invoices",
                                                     "file": "rules/finance/invoices.policy", "line": 21,
                                                     "message": "AP analysts review invoice exceptions"}],
                     "obligations": [], "route": None, "policy_hash": "9f2c"},
    }


def append(db: Path, key, records: int, payload, event: str = "model_call") -> str:
    """Append ``records`` ``event``s (closing the log: every record durable and signed); wall and CPU rates.

    The event matters: only ``model_call`` records get ``audit_facts`` rows (facts.py).
    """
    payloads = [payload(i) for i in range(1000)]
    started, cpu, caller = time.perf_counter(), time.process_time(), time.thread_time()
    with AuditLog(db, key, batch_size=5_000, checkpoint_every=10_000) as log:
        for i in range(records):
            log.append(event, actor="agent:invoice_classifier", workflow="invoice-exceptions",
                       run_id=f"run-{i // 1000}", payload=payloads[i % 1000], policy_hash="9f2c")
    wall, cpu, caller = time.perf_counter() - started, time.process_time() - cpu, time.thread_time() - caller
    return (f"{records / wall:,.0f} records/s wall, {cpu / records * 1e6:.1f} us CPU per record"
            f" (appending thread {caller / records * 1e6:.1f},"
            f" writer and DuckDB threads {(cpu - caller) / records * 1e6:.1f})")


def append_durable(db: Path, key, records: int, payload, waiters: int = 8) -> str:
    """``waiters`` threads each append a record and wait for it to be durable (group commit), as servers do."""
    import threading

    payloads = [payload(i) for i in range(1000)]
    per = records // waiters
    started, cpu = time.perf_counter(), time.process_time()
    with AuditLog(db, key, batch_size=5_000, checkpoint_every=10_000) as log:
        def caller(offset: int) -> None:
            for i in range(offset, offset + per):
                seq = log.append("decision", actor="u", workflow="invoice-exceptions", run_id=f"run-{i // 1000}",
                                 payload=payloads[i % 1000], policy_hash="9f2c")
                if i % 64 == 63:  # a caller acknowledging every 64th record, like eval --audit's groups
                    log.wait_durable(seq)
        threads = [threading.Thread(target=caller, args=(n * per,)) for n in range(waiters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return f"{per * waiters / wall:,.0f} records/s wall, {cpu / (per * waiters) * 1e6:.1f} us CPU per record"


def bare_arrow_insert(source: Path, folder: Path, batch: int | None = None) -> str:
    """The floor: the same rows, already built, inserted as Arrow tables into a bare DuckDB table.

    ``batch=None``: one table, one commit; else one commit per ``batch`` rows, as the log commits
    (without hashing, canonical JSON, signatures, audit_facts or threads).
    """
    import duckdb

    con = duckdb.connect(str(source), read_only=True)
    rows = con.sql("SELECT * FROM audit_log ORDER BY seq").to_arrow_table()
    con.close()
    target = duckdb.connect(str(folder / f"bare-{batch}.duckdb"))
    target.execute("CREATE TABLE audit_log AS SELECT * FROM rows LIMIT 0")
    started = time.perf_counter()
    step = batch or rows.num_rows
    for offset in range(0, rows.num_rows, step):
        part = rows.slice(offset, step)  # noqa: F841 - read by DuckDB's replacement scan below
        target.execute("BEGIN TRANSACTION")
        target.execute("INSERT INTO audit_log SELECT * FROM part")
        target.execute("COMMIT")
    target.close()
    wall = time.perf_counter() - started
    return f"{rows.num_rows / wall:,.0f} rows/s wall ({rows.num_rows:,} rows)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--decisions-only", action="store_true",
                        help="only the decision rows and their floors (no model_call rows, no verify): for A/B runs")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; other work on the machine lowers these numbers)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = generate_key(folder / "bench.key")
        import pyarrow as pa

        pa.array([1])  # the first pa.array of a process imports pandas (~350 ms): not the first row's to pay
        for name, payload in ((("decision", decision),) if args.decisions_only else
                              (("model_call", model_call), ("decision", decision))):
            rate = append(folder / f"{name}.duckdb", key, 200_000, payload, name)
            print(f"append {name:<10} 200,000 records, checkpoint every 10,000: {rate}")
        rate = append_durable(folder / "durable.duckdb", key, 200_000, decision)
        print(f"append decision   200,000 records, 8 threads waiting for durability (group commit): {rate}")
        print(f"bare DuckDB Arrow insert of the same decision rows, one commit: "
              f"{bare_arrow_insert(folder / 'decision.duckdb', folder)}")
        print(f"bare DuckDB Arrow insert of the same decision rows, a commit per 5,000: "
              f"{bare_arrow_insert(folder / 'decision.duckdb', folder, 5_000)}")
        print(f"bare DuckDB Arrow insert of the same decision rows, a commit per 256: "
              f"{bare_arrow_insert(folder / 'decision.duckdb', folder, 256)}")
        if args.decisions_only:
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            return
        db = folder / "big.duckdb"
        rate = append(db, key, args.records, model_call)
        print(f"append model_call  {args.records:,} records: {rate}")
        for attempt in range(2):
            started = time.perf_counter()
            report = verify_database(db, [key.public])
            elapsed = time.perf_counter() - started
            assert report.ok, report.summary()
            print(f"verify {report.records:,} records, {report.checkpoints} checkpoints: {elapsed:.2f} s"
                  f" ({'cold' if attempt == 0 else 'warm'} file cache)")
        print(f"database size: {db.stat().st_size / 1e6:.0f} MB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
