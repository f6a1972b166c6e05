-- Incidents in the period: denied requests by the rule that denied them first, budget alerts,
-- monitor breaches that blocked a model, and failed runs.
SELECT 'denied request' AS kind,
       coalesce(payload->>'$.decision.reasons[0].rule', '(no reason)') AS rule,
       count(*) AS events, min(ts) AS first_seen, max(ts) AS last_seen
FROM audit_log
WHERE event = 'decision' AND payload->>'$.decision.effect' = 'deny' AND ts >= $since AND ts < $until
GROUP BY ALL
UNION ALL
SELECT CASE WHEN try_cast(payload->>'$.breach' AS BOOLEAN) THEN 'budget exceeded' ELSE 'budget warning' END,
       payload->>'$.rule', count(*), min(ts), max(ts)
FROM audit_log
WHERE event = 'alert' AND payload->>'$.kind' = 'budget' AND ts >= $since AND ts < $until
GROUP BY ALL
UNION ALL
SELECT 'model blocked by monitor', payload->>'$.rule', count(*), min(ts), max(ts)
FROM audit_log
WHERE event = 'alert' AND payload->>'$.action' = 'block' AND try_cast(payload->>'$.breach' AS BOOLEAN)
  AND ts >= $since AND ts < $until
GROUP BY ALL
UNION ALL
SELECT 'failed run', coalesce(workflow, '?'), count(*), min(ts), max(ts)
FROM audit_log
WHERE event = 'run' AND payload->>'$.status' = 'failed' AND ts >= $since AND ts < $until
GROUP BY ALL
ORDER BY kind, events DESC, rule;
