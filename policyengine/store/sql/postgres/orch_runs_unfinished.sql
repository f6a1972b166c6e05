-- orch_runs_unfinished: runs recorded as running (held or not), oldest first.
SELECT run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at FROM orch_runs WHERE status = 'running' ORDER BY created_at, run_id;
