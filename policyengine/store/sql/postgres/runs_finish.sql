-- runs_finish: end (or pause: status 'waiting') a run held by this worker; no row if another holds it.
UPDATE store_runs SET status = %(status)s, worker = CASE WHEN %(status)s = 'waiting' THEN NULL ELSE worker END,
       updated_at = now()
WHERE run_id = %(run_id)s AND worker = %(worker)s AND status = 'running'
RETURNING run_id;
