-- The step journals of several runs (the approver inbox lists many), each in execution order.
SELECT * FROM orch_steps WHERE run_id IN (SELECT unnest($run_ids::VARCHAR[])) ORDER BY run_id, ord, started_at
