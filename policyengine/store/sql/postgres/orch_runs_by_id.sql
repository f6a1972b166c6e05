-- orch_runs_by_id: runs of exactly these ids (a re-run of a batch looks its items' runs up; no prefixes).
-- An intent inserts its run (orch_intent_run), so every run an intent knows is here.
SELECT run_id, batch_id, workflow, item_id, requested_by, status, outcome, input, error, policy_hash, tokens, cost_usd, created_at, updated_at FROM orch_runs
WHERE run_id = ANY(%(run_ids)s::text[]);
