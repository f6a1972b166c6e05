-- orch_run_upsert: write one run row; refused (no row) when another worker holds the run now.
INSERT INTO orch_runs (run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at, worker_lock, worker)
VALUES (%(run_id)s, %(batch_id)s, %(workflow)s, %(item_id)s, %(requested_by)s, %(status)s, %(outcome)s, %(input)s,
        %(error)s, %(policy_hash)s, %(tokens)s, %(cost_usd)s, %(created_at)s, %(updated_at)s, %(lock)s, %(worker)s)
ON CONFLICT (run_id) DO UPDATE SET
    batch_id = excluded.batch_id, workflow = excluded.workflow, item_id = excluded.item_id,
    requested_by = excluded.requested_by, status = excluded.status, outcome = excluded.outcome,
    input = excluded.input, error = excluded.error, policy_hash = excluded.policy_hash, tokens = excluded.tokens,
    cost_usd = excluded.cost_usd, created_at = excluded.created_at, updated_at = excluded.updated_at,
    worker_lock = excluded.worker_lock, worker = excluded.worker
WHERE orch_runs.worker_lock IS NULL OR orch_runs.worker_lock = excluded.worker_lock
RETURNING run_id;
