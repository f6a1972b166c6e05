-- How many of the run-state tables a database holds (a read-only open cannot create them).
SELECT count(*) FROM information_schema.tables
WHERE table_schema = 'main' AND table_name IN ('orch_runs', 'orch_steps', 'orch_approvals')
