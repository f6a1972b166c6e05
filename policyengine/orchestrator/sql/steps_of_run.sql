-- The step journal of one run, in execution order.
SELECT * FROM orch_steps WHERE run_id = $run_id ORDER BY ord, started_at
