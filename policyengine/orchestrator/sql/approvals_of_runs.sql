-- Every approval gate several runs have met (the approver inbox lists many), each run's oldest first.
SELECT * FROM orch_approvals WHERE run_id IN (SELECT unnest($run_ids::VARCHAR[])) ORDER BY run_id, requested_at, step
