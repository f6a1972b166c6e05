-- orch_steps_of_runs: the step journals of several runs (the approver inbox lists many), each in execution order.
SELECT run_id, step, ord, kind, status, idem_key, output, effect, reason, model, tokens, cost_usd, latency_ms, started_at, finished_at FROM orch_steps WHERE run_id = ANY(%(run_ids)s::text[]) ORDER BY run_id, ord, started_at;
