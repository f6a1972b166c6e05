-- runs_resume: put a waiting run back in the queue; no row if it was not waiting (resumed once).
UPDATE store_runs SET status = 'queued', updated_at = current_timestamp::TIMESTAMP
WHERE run_id = $run_id AND status = 'waiting'
RETURNING run_id;
