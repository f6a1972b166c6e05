-- orch_decide_run: a decision (approval, rejection, expiry) takes its waiting run for this worker to drive on.
-- Conditional: exactly one decider anywhere finds the run waiting; the others get no row.
UPDATE orch_runs SET status = 'running', worker_lock = %(lock)s, worker = %(worker)s, updated_at = %(at)s
WHERE run_id = %(run_id)s AND status = 'waiting_approval'
RETURNING run_id;
