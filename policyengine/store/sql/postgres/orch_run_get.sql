-- orch_run_get: one run by id, or by a unique id prefix.
SELECT run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at FROM orch_runs
WHERE run_id = %(run_id)s OR starts_with(run_id, %(run_id)s)
ORDER BY run_id = %(run_id)s DESC LIMIT 2;
