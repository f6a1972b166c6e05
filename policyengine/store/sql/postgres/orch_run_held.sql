-- orch_run_held: does this worker (still) hold the run, with its liveness lock? Checked before every side effect.
SELECT 1 FROM orch_runs WHERE run_id = %(run_id)s AND worker_lock = %(lock)s AND orch_worker_alive(%(lock)s);
