-- runs_requeue: runs held by workers that are gone go back to the queue.
UPDATE store_runs SET status = 'queued', worker = NULL, updated_at = now()
WHERE status = 'running' AND NOT (worker = ANY(%(alive)s))
RETURNING run_id;
