-- title: Bias, drift and budget alerts
-- description: Every alert recorded by the monitor and the budget checks: which rule,
--   model and metric, the value against the threshold, whether it was a breach and
--   which action followed (alert, escalate to a role, block); error says why a rule
--   could not be evaluated (e.g. no data in its window).
-- regulation: EU AI Act Art. 9 (risk management), Art. 10(2)(f) (bias examination) and Art. 72 (post-market monitoring)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
-- param: kind VARCHAR = null | only alerts of this kind: bias, drift or budget (default: all)
SELECT seq, ts,
       payload ->> '$.kind'                          AS kind,
       payload ->> '$.rule'                          AS rule,
       payload ->> '$.model'                         AS model,
       payload ->> '$.metric'                        AS metric,
       TRY_CAST(payload ->> '$.value' AS DOUBLE)     AS value,
       payload ->> '$.threshold'                     AS threshold,
       TRY_CAST(payload ->> '$.breach' AS BOOLEAN)   AS breach,
       payload ->> '$.action'                        AS action,
       payload ->> '$.details.escalate_to_role'      AS escalate_to,
       payload ->> '$.details.error'                 AS error
FROM audit_log
WHERE event = 'alert' AND ts >= $since AND ts < $until
  AND (CAST($kind AS VARCHAR) IS NULL OR payload ->> '$.kind' = CAST($kind AS VARCHAR))
ORDER BY seq;
