-- orch_intent_run: a run first made durable by the intent of its first side effect is held by this worker.
INSERT INTO orch_runs (run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at, worker_lock, worker)
VALUES (%(run_id)s, %(batch_id)s, %(workflow)s, %(item_id)s, %(requested_by)s, 'running', NULL, %(input)s, NULL,
        %(policy_hash)s, 0, 0.0, %(created_at)s, %(created_at)s, %(lock)s, %(worker)s)
ON CONFLICT (run_id) DO NOTHING;
