-- runs_get: one run.
SELECT run_id, workflow, input, status, worker FROM store_runs WHERE run_id = %(run_id)s;
