"""The orchestrator's run state on PostgreSQL: what a claim, a decision and a flush cost.

Run by hand (not a test):  python benchmarks/bench_runs_postgres.py [--postgres URL] [--n 500]

* flush: one run row plus three step rows, one transaction (what a run costs at its end);
* claim: ``claim_unfinished`` of one run a gone worker left, latency with one
  worker and runs claimed per second with 1, 2 and 4 workers (each its own
  store, session and liveness lock), checking that no run is claimed twice;
* decide: a waiting run's gate approved (conditional UPDATE of the run and the gate).

Without ``--postgres`` a throwaway server is started in a temp directory (as
the tests do) and stopped after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from datetime import datetime, timedelta

from policyengine.orchestrator.state import ApprovalRecord, RunRecord, StepRecord
from policyengine.store import open_store
from policyengine.store.stores import open_run_state
from timing import in_threads, latencies_us, pct, postgres

T0 = datetime(2026, 12, 1, 9, 0)


def _run(run_id: str, status: str) -> RunRecord:
    return RunRecord(run_id, None, "bench", None, "operator", status, None, '{"id": 1}', None, "h", 0, 0.0, T0, T0)


def _steps(run_id: str) -> list[StepRecord]:
    return [StepRecord(run_id, f"s{i}", i, "tool", "done", f"{run_id}/s{i}", '{"ok": true}', "allow", None, None,
                       None, None, 1.0, T0, T0) for i in range(3)]


def _us(samples: list[float]) -> str:
    return f"{statistics.median(samples):,.0f} / {pct(samples, 0.99):,.0f}"


def bench(url: str, n: int) -> None:
    with open_store(url) as shared:
        tag = f"{time.time_ns()}"
        seed = open_run_state(shared)

        def seeded(i: int) -> None:
            seed.put(_run(f"f-{tag}-{i}", "running"), *_steps(f"f-{tag}-{i}"))

        flush = latencies_us(n, lambda _: seed.flush(), prepare=seeded)
        print(f"flush (run + 3 steps) median / p99 µs: {_us(flush)}")
        seed.abandon()  # the seed worker is gone: its n runs are claimable

        one = open_run_state(shared)
        claimed: list[int] = []
        lat = latencies_us(n // 2, lambda _: claimed.append(len(one.claim_unfinished(["bench"]))))
        assert set(claimed) == {1}
        print(f"claim, 1 worker, median / p99 µs: {_us(lat)}")
        one.abandon()  # what it claimed is claimable again

        for workers in (1, 2, 4):
            stores = [open_run_state(shared) for _ in range(workers)]
            taken: list[list[str]] = [[] for _ in stores]

            def work(k: int) -> None:
                while got := stores[k].claim_unfinished(["bench"]):
                    taken[k] += [r.run_id for r in got]
                    stores[k].put(replace(got[0], status="completed"))
                    stores[k].flush()

            took = in_threads(workers, work)
            all_taken = [r for ts in taken for r in ts]
            assert len(all_taken) == len(set(all_taken)), "a run was claimed twice"
            print(f"claim+complete, {workers} worker(s): {len(all_taken) / took:,.0f} runs/s "
                  f"({len(all_taken)} runs, per worker {[len(ts) for ts in taken]})")
            for s in stores:
                s.close()
            # put the completed runs back to running for the next round, left by a gone worker
            with shared.pool.connection() as conn:  # left by a gone worker again (its lock is released)
                conn.execute("UPDATE orch_runs SET status = 'running' WHERE run_id = ANY(%s)", (all_taken,))

        decider = open_run_state(shared)

        def waiting(i: int) -> tuple[RunRecord, ApprovalRecord]:
            run = _run(f"d-{tag}-{i}", "waiting_approval")
            gate = ApprovalRecord(run.run_id, "s0", "g", "approver", "operator", T0, T0 + timedelta(hours=1),
                                  "deny", False, "pending", None, None, None)
            decider.put(run, gate)
            decider.flush()
            return run, gate

        won: list[bool] = []
        dec = latencies_us(n // 2, lambda rg: won.append(decider.decide(
            rg[0], [replace(rg[1], status="approved", approver="alice", decided_at=T0)])), prepare=waiting)
        assert all(won)
        print(f"decide (run + 1 gate) median / p99 µs: {_us(dec)}")
        decider.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", help="an existing server's URL (default: a throwaway one)")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    with postgres(args.postgres) as url:
        bench(url, args.n)


if __name__ == "__main__":
    main()
