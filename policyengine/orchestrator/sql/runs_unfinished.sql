-- Runs a crash interrupted: recorded as running, or known only from a write-ahead intent.
SELECT * FROM orch_runs WHERE status = 'running'
UNION ALL
SELECT run_id, any_value(batch_id), any_value(workflow), any_value(item_id), any_value(requested_by), 'running',
       NULL, any_value(input), NULL, NULL, 0, 0.0, min(created_at), min(created_at)
FROM orch_intents i
WHERE NOT EXISTS (SELECT 1 FROM orch_runs r WHERE r.run_id = i.run_id)
GROUP BY run_id
ORDER BY created_at
