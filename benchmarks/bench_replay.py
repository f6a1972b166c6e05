"""Shadow replay throughput: 1,000,000 recorded decisions re-decided under a candidate policy.

Run by hand (not in CI):  python benchmarks/bench_replay.py [--records 1000000]
Results go in benchmarks/README.md ("Replay" section). Target: < 30 s for 1M.

The log holds real decision records: the five mission workflows are run once on
their shipped samples (in-process, simulator models), and their decision
payloads are appended again and again, signed as usual, until the log holds
``--records`` decisions. The candidate is the shipped rules with the marketing
launch threshold raised, so some decisions change and are collected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from policyengine.audit import AuditLog, generate_key
from policyengine.engine import load_policy
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import WORKFLOWS, load_items, sample_path
from policyengine.replay import replay
from policyengine.resources import data_path


def sample_decisions(folder: Path) -> list[tuple[str | None, str | None, dict, str | None]]:
    config = SessionConfig(db=folder / "sample.duckdb", key=folder / "sample.key", create_key=True)
    with Session(config) as session:
        for name in WORKFLOWS:
            session.orchestrator.run_batch(name, load_items(sample_path(name)), requested_by="operator")
    with duckdb.connect(str(config.db), read_only=True) as conn:
        rows = conn.execute("SELECT actor, workflow, payload, policy_hash FROM audit_log WHERE event = 'decision' "
                            "ORDER BY seq").fetchall()
    return [(a, w, json.loads(p), h) for a, w, p, h in rows]


def build_log(db: Path, key, records: int, samples, *, distinct: bool) -> float:
    """``records`` decisions cycling through ``samples``, each with its own run id; with ``distinct`` each
    request also names its own requester, so no two requests are alike (replay cannot reuse a decision)."""
    started = time.perf_counter()
    with AuditLog(db, key, batch_size=5_000, checkpoint_every=10_000) as log:
        for i in range(records):
            actor, workflow, payload, phash = samples[i % len(samples)]
            request = payload["request"]
            context = {**request.get("context", {}), "run_id": f"r-{i:012x}"}
            request = {**request, "context": context}
            if distinct:
                principal = request["principal"]
                request["principal"] = {**principal, "attrs": {**principal.get("attrs", {}), "requested_by": f"u{i}"}}
            log.append("decision", actor=actor, workflow=workflow, run_id=f"r-{i:012x}",
                       payload={**payload, "request": request}, policy_hash=phash)
    return time.perf_counter() - started


def candidate(folder: Path) -> Path:
    rules = folder / "candidate"
    shutil.copytree(data_path("rules"), rules)
    p = rules / "marketing" / "personalization.policy"
    p.write_text(p.read_text().replace("context.audience_size > 100_000 or context.spend_usd > 50_000",
                                       "context.audience_size > 500_000 or context.spend_usd > 500_000"))
    return rules


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="DIR", help="Build the logs in DIR and reuse them on the next run "
                                                       "(default: a temporary folder, removed)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to measure")
    parser.add_argument("--only", choices=["workflow", "distinct"], help="measure one of the two logs")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; other work on the machine lowers these numbers)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        policy = load_policy([candidate(folder)]) if not (folder / "candidate").exists() else \
            load_policy([folder / "candidate"])
        samples = None
        key_file = folder / "bench.key"
        key = generate_key(key_file) if not key_file.exists() else None
        for distinct in (False, True):
            if args.only and args.only != ("distinct" if distinct else "workflow"):
                continue
            db = folder / f"big-{args.records}-{distinct}.duckdb"
            kind = "every request distinct" if distinct else "workflow requests, unique run ids"
            if not db.exists():
                if samples is None:
                    samples = sample_decisions(Path(tmp))
                    print(f"{len(samples):,} distinct decision records from one run of the five workflows")
                if key is None:
                    from policyengine.audit import load_private_key
                    key = load_private_key(key_file)
                took = build_log(db, key, args.records, samples, distinct=distinct)
                print(f"built a log of {args.records:,} decisions ({kind}) in {took:.1f} s "
                      f"({db.stat().st_size / 1e6:.0f} MB)")
            else:
                print(f"reusing {db} ({kind}, {db.stat().st_size / 1e6:.0f} MB)")
            for jobs in args.jobs:
                started, cpu = time.perf_counter(), time.process_time()
                result = replay(db, policy, jobs=jobs)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                print(f"  replay, {jobs} process(es): {result.replayed:,} decisions in {wall:.2f} s "
                      f"({result.replayed / wall:,.0f}/s; this process's CPU {cpu:.2f} s, load average "
                      f"{os.getloadavg()[0]:.1f}); {result.changed:,} changed: {dict(result.by_transition)}")
            if not args.keep:
                db.unlink()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
