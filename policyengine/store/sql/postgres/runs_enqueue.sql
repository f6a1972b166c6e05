-- runs_enqueue: add a run to the queue (a run id already present is left as it is).
INSERT INTO store_runs (run_id, workflow, input, status) VALUES (%(run_id)s, %(workflow)s, %(input)s::jsonb, 'queued')
ON CONFLICT (run_id) DO NOTHING;
