-- runs_claim: take up to `limit` queued runs for one worker. Rows another worker is
-- claiming right now are skipped (SKIP LOCKED), never waited for or taken twice.
UPDATE store_runs SET status = 'running', worker = %(worker)s, updated_at = now()
WHERE run_id IN (SELECT run_id FROM store_runs WHERE status = 'queued'
                 ORDER BY created_at, run_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, input, status, worker;
