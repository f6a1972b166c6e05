-- Bias and drift monitoring results in the period, and models unblocked by a person.
SELECT ts,
       payload->>'$.kind' AS kind,
       payload->>'$.rule' AS rule,
       payload->>'$.model' AS model,
       payload->>'$.metric' AS metric,
       try_cast(payload->>'$.value' AS DOUBLE) AS value,
       payload->>'$.threshold' AS threshold,
       try_cast(payload->>'$.breach' AS BOOLEAN) AS breach,
       payload->>'$.action' AS action
FROM audit_log
WHERE event = 'alert' AND payload->>'$.kind' IN ('bias', 'drift') AND ts >= $since AND ts < $until
UNION ALL
SELECT ts, 'unblock', payload->>'$.rules', payload->>'$.model', NULL, NULL, NULL, NULL,
       'unblocked by ' || coalesce(payload->>'$.by', actor, '?')
FROM audit_log
WHERE event = 'model_unblocked' AND ts >= $since AND ts < $until
ORDER BY ts;
