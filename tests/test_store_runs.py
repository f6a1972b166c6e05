"""Runs and approvals shared by workers: no run executed by two workers at once, no effect twice,
each approval decided (or expired) once. PostgreSQL with worker processes; embedded with threads."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from policyengine.store import open_store

STEPS = ("reserve_funds", "post_payment", "notify_vendor")

# One worker: claim runs one at a time until the queue is empty; for each step,
# skip it when its effect is recorded, else perform it (append a row to the
# `performed` table, which has no uniqueness, so a double execution shows) and
# record it. Workers resuming runs a dead worker left half done skip what it did.
WORKER = r"""
import sys, time
from policyengine.store import open_store
url, name = sys.argv[1], sys.argv[2]
store = open_store(url)
with store.runs.pool.connection() as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS performed (idem_key TEXT, worker TEXT)")
done = 0
while True:
    runs = store.runs.claim(name)
    if not runs:
        break
    for run in runs:
        for step in %(steps)r:
            key = f"{run.run_id}:{step}"
            if store.runs.effect(key) is not None:
                continue
            with store.runs.pool.connection() as conn:
                conn.execute("INSERT INTO performed VALUES (%%s, %%s)", (key, name))
            time.sleep(0.001)
            assert store.runs.record_effect(run.run_id, key, step, {"by": name})
        assert store.runs.finish(run.run_id, name, "done")
        done += 1
print(done, flush=True)
store.close()
""" % {"steps": STEPS}


def seed(store, runs: int) -> set[str]:
    """``runs`` queued runs; the first quarter were half done by a worker that died (``w0``)."""
    already = set()
    for i in range(runs):
        store.runs.enqueue(f"run-{i:03d}", "invoice-exceptions", {"invoice": i})
    dead = store.runs.claim("w0", limit=runs // 4)
    assert len(dead) == runs // 4
    for run in dead:
        key = f"{run.run_id}:{STEPS[0]}"
        assert store.runs.record_effect(run.run_id, key, STEPS[0], {"by": "w0"})
        already.add(key)
    assert store.runs.requeue_abandoned(["w1", "w2"]) == runs // 4
    return already


@pytest.mark.postgres
def test_two_worker_processes_resume_runs_without_executing_an_effect_twice(postgres_url):
    store = open_store(postgres_url)
    already = seed(store, 60)
    with store.runs.pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS performed (idem_key TEXT, worker TEXT)")
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, name], stdout=subprocess.PIPE, text=True)
               for name in ("w1", "w2")]
    done = []
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        done.append(int(out))
    assert sum(done) == 60
    with store.runs.pool.connection() as conn:
        performed = [r[0] for r in conn.execute("SELECT idem_key FROM performed").fetchall()]
        statuses = dict(conn.execute("SELECT status, count(*) FROM store_runs GROUP BY status").fetchall())
    assert len(performed) == len(set(performed))  # no effect executed twice
    assert set(performed) | already == {f"run-{i:03d}:{s}" for i in range(60) for s in STEPS}
    assert not set(performed) & already  # what the dead worker did is not redone
    assert statuses == {"done": 60}
    store.close()


def test_worker_threads_on_the_embedded_store_claim_each_run_once(tmp_path):
    store = open_store(str(tmp_path / "state.duckdb"))
    seed(store, 40)
    performed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while runs := store.runs.claim(name):
            for run in runs:
                for step in STEPS:
                    key = f"{run.run_id}:{step}"
                    if store.runs.effect(key) is None:
                        with lock:
                            performed.append(key)
                        assert store.runs.record_effect(run.run_id, key, step, {"by": name})
                assert store.runs.finish(run.run_id, name, "done")

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(performed) == len(set(performed)) == 40 * 3 - 10
    assert all(store.runs.get(f"run-{i:03d}").status == "done" for i in range(40))
    store.close()


DEADLINE = datetime(2026, 11, 14, 12, 0, tzinfo=UTC)


def approvals_race(store) -> None:
    """8 threads decide the same gates and expire the same overdue gates: each happens once."""
    for i in range(20):
        store.runs.enqueue(f"run-{i}", "wf", {})
        assert store.runs.claim(f"w-{i}")[0].run_id == f"run-{i}"
        assert store.runs.finish(f"run-{i}", f"w-{i}", "waiting")
        store.approvals.open(f"run-{i}", "finance", "finance_manager", "alice",
                             DEADLINE if i < 10 else DEADLINE + timedelta(days=1))
    wins: list[tuple[str, str]] = []
    expired: list[str] = []
    resumed: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(8)

    def worker(n: int) -> None:
        gate.wait()
        got = store.approvals.expire_overdue(DEADLINE)
        for i in range(10, 20):
            if store.approvals.decide(f"run-{i}", "finance", f"user{n}", approve=True, at=DEADLINE):
                with lock:
                    wins.append((f"run-{i}", f"user{n}"))
                if store.runs.resume(f"run-{i}"):
                    with lock:
                        resumed.append(f"run-{i}")
        with lock:
            expired.extend(a.run_id for a in got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(expired) == sorted(f"run-{i}" for i in range(10))
    assert sorted(r for r, _ in wins) == sorted(resumed) == sorted(f"run-{i}" for i in range(10, 20))
    for i in range(10):
        assert store.approvals.get(f"run-{i}", "finance").status == "expired"
        assert not store.approvals.decide(f"run-{i}", "finance", "bob", approve=True, at=DEADLINE)
    for run_id, user in wins:
        got = store.approvals.get(run_id, "finance")
        assert (got.status, got.decided_by) == ("approved", user)
        assert store.runs.get(run_id).status == "queued"


@pytest.mark.postgres
def test_approvals_are_decided_and_expired_once_on_postgres(postgres_url):
    with open_store(postgres_url) as store:
        approvals_race(store)


def test_approvals_are_decided_and_expired_once_on_the_embedded_store(tmp_path):
    with open_store(str(tmp_path / "state.duckdb")) as store:
        approvals_race(store)
