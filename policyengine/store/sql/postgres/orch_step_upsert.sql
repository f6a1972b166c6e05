-- orch_step_upsert: write one step-journal row.
INSERT INTO orch_steps (run_id, step, ord, kind, status, idem_key, output, effect, reason, model, tokens, cost_usd, latency_ms, started_at, finished_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, step) DO UPDATE SET
    ord = excluded.ord, kind = excluded.kind, status = excluded.status, idem_key = excluded.idem_key,
    output = excluded.output, effect = excluded.effect, reason = excluded.reason, model = excluded.model,
    tokens = excluded.tokens, cost_usd = excluded.cost_usd, latency_ms = excluded.latency_ms,
    started_at = excluded.started_at, finished_at = excluded.finished_at;
