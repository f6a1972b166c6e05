-- runs_requeue: runs held by workers that are gone go back to the queue.
UPDATE store_runs SET status = 'queued', worker = NULL, updated_at = current_timestamp::TIMESTAMP
WHERE status = 'running' AND NOT list_contains($alive, worker)
RETURNING run_id;
