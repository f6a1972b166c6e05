-- title: Denials with reasons
-- description: Every denied request with who asked, for what, and each reason the engine
--   gave (rule id, file, line, message). One row per reason; built-in checks appear as
--   <default-deny>, <blocked-model>, <request> and the like.
-- regulation: EU AI Act Art. 13 (transparency) and Art. 12 (record-keeping); GDPR Art. 22 (explanation of automated decisions)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
-- param: rule VARCHAR = null | only reasons from this rule id (default: all)
WITH denied AS (
    SELECT seq, ts, actor, workflow, run_id, payload,
           unnest(coalesce(json_extract(payload, '$.decision.reasons[*]'), [NULL::JSON])) AS reason
    FROM audit_log
    WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'deny'
      AND ts >= $since AND ts < $until
)
SELECT
    seq,
    ts,
    actor,
    workflow,
    run_id,
    payload ->> '$.request.action'                                          AS action,
    (payload ->> '$.request.resource.kind') || ':' ||
        coalesce(payload ->> '$.request.resource.id', '*')                  AS resource,
    reason ->> '$.rule'                                                     AS rule,
    reason ->> '$.message'                                                  AS message,
    reason ->> '$.file'                                                     AS file,
    TRY_CAST(reason ->> '$.line' AS INTEGER)                                AS line
FROM denied
WHERE CAST($rule AS VARCHAR) IS NULL OR reason ->> '$.rule' = CAST($rule AS VARCHAR)
ORDER BY seq, rule;
