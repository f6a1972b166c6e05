-- orch_runs_claim: take runs left running by a worker that is gone (its liveness lock released), for this worker.
-- Rows another worker is claiming right now are skipped (SKIP LOCKED), never waited for or taken twice;
-- a row claimed and committed meanwhile is re-checked and found held by a live worker.
-- With run_id: that run only, also when this worker already holds it.
WITH live AS (  -- the live workers' locks, read once (the function below re-checks each candidate live)
    SELECT objid::bigint AS lock FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND classid = 7020131 AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
UPDATE orch_runs SET worker_lock = %(lock)s, worker = %(worker)s
WHERE run_id IN (
    SELECT r.run_id FROM orch_runs r
    WHERE r.status = 'running' AND r.workflow = ANY(%(workflows)s)
      AND (%(run_id)s::text IS NULL OR r.run_id = %(run_id)s)
      AND (r.worker_lock IS NULL
           OR (r.worker_lock NOT IN (SELECT lock FROM live) AND NOT orch_worker_alive(r.worker_lock))
           OR (%(run_id)s::text IS NOT NULL AND r.worker_lock = %(lock)s))
    ORDER BY r.created_at, r.run_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at;
