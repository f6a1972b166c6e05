-- Runs of exactly these ids (a re-run of a batch looks its items' runs up; no prefixes). A run known only
-- from a write-ahead intent reads as running, as in runs_unfinished.
SELECT * FROM orch_runs WHERE run_id IN (SELECT unnest($run_ids::VARCHAR[]))
UNION ALL
SELECT run_id, any_value(batch_id), any_value(workflow), any_value(item_id), any_value(requested_by), 'running',
       NULL, any_value(input), NULL, NULL, 0, 0.0, min(created_at), min(created_at)
FROM orch_intents i
WHERE run_id IN (SELECT unnest($run_ids::VARCHAR[]))
  AND NOT EXISTS (SELECT 1 FROM orch_runs r WHERE r.run_id = i.run_id)
GROUP BY run_id
