-- Every approval gate a run has met, oldest first.
SELECT * FROM orch_approvals WHERE run_id = $run_id ORDER BY requested_at, step
