-- orch_steps_of_run: the step journal of one run, in execution order.
SELECT run_id, step, ord, kind, status, idem_key, output, effect, reason, model, tokens, cost_usd, latency_ms, started_at, finished_at FROM orch_steps WHERE run_id = %(run_id)s ORDER BY ord, started_at;
