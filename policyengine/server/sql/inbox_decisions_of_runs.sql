-- The decisions recorded for the runs an approver's inbox lists, each run's oldest first: the page shows the
-- request and reasons of each escalated step.
SELECT run_id, payload FROM audit_log
WHERE event = 'decision' AND run_id IN (SELECT unnest($run_ids::VARCHAR[]))
ORDER BY run_id, seq
