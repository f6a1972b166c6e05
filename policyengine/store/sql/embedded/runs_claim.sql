-- runs_claim: take up to `limit` queued runs for one worker (the embedded store serialises
-- claims in its process with a lock; a DuckDB file has one process).
UPDATE store_runs SET status = 'running', worker = $worker, updated_at = current_timestamp::TIMESTAMP
WHERE run_id IN (SELECT run_id FROM store_runs WHERE status = 'queued'
                 ORDER BY created_at, run_id LIMIT $limit)
RETURNING run_id, workflow, input, status, worker;
