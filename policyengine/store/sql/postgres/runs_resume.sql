-- runs_resume: put a waiting run back in the queue; no row if it was not waiting (resumed once).
UPDATE store_runs SET status = 'queued', updated_at = now()
WHERE run_id = %(run_id)s AND status = 'waiting'
RETURNING run_id;
