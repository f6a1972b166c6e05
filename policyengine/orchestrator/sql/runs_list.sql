-- Runs, newest first, optionally filtered by status and workflow.
SELECT * FROM orch_runs
WHERE ($status IS NULL OR status = $status) AND ($workflow IS NULL OR workflow = $workflow)
ORDER BY created_at DESC, run_id DESC
LIMIT $limit
