-- orch_runs_list: runs, newest first, optionally filtered by status and workflow.
SELECT run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at FROM orch_runs
WHERE (%(status)s::text IS NULL OR status = %(status)s) AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;
