-- Bias and drift monitoring results in the period, and models unblocked by a person.
-- not_evaluated: why the monitor could not evaluate the rule (no value, so breach false is no reading).
SELECT ts,
       payload->>'$.kind' AS kind,
       payload->>'$.rule' AS rule,
       payload->>'$.model' AS model,
       payload->>'$.metric' AS metric,
       try_cast(payload->>'$.value' AS DOUBLE) AS value,
       payload->>'$.threshold' AS threshold,
       try_cast(payload->>'$.breach' AS BOOLEAN) AS breach,
       payload->>'$.action' AS action,
       CASE WHEN payload->>'$.details.error' IS NOT NULL THEN payload->>'$.details.error'
            WHEN try_cast(payload->>'$.value' AS DOUBLE) IS NULL THEN 'no value recorded'
       END AS not_evaluated
FROM audit_log
WHERE event = 'alert' AND payload->>'$.kind' IN ('bias', 'drift') AND ts >= $since AND ts < $until
UNION ALL
SELECT ts, 'unblock', payload->>'$.rules', payload->>'$.model', NULL, NULL, NULL, NULL,
       'unblocked by ' || coalesce(payload->>'$.by', actor, '?'), NULL
FROM audit_log
WHERE event = 'model_unblocked' AND ts >= $since AND ts < $until
ORDER BY ts;
