-- runs_finish: end (or pause: status 'waiting') a run held by this worker; no row if another holds it.
UPDATE store_runs SET status = $status, worker = CASE WHEN $status = 'waiting' THEN NULL ELSE worker END,
       updated_at = current_timestamp::TIMESTAMP
WHERE run_id = $run_id AND worker = $worker AND status = 'running'
RETURNING run_id;
