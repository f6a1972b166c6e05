-- orch_intent: record the intent to run a side-effecting step (committed before the call).
INSERT INTO orch_intents (idem_key, run_id, step, batch_id, workflow, item_id, requested_by, input, created_at)
VALUES (%(idem_key)s, %(run_id)s, %(step)s, %(batch_id)s, %(workflow)s, %(item_id)s, %(requested_by)s, %(input)s,
        %(created_at)s);
