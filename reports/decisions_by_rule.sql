-- title: Decisions by rule and effect per day
-- description: How many requests each rule decided, by effect, per UTC day. A decision
--   decided by several rules counts once for each; one with no reason counts under
--   "(no rule)". The starting point of any review of what the policy actually did.
-- regulation: EU AI Act Art. 12 (record-keeping); ISO/IEC 42001 cl. 9.1 (monitoring); SOX 404
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
WITH decided AS (
    SELECT
        ts,
        payload ->> '$.decision.effect' AS effect,
        list_distinct(coalesce(json_extract_string(payload, '$.decision.reasons[*].rule'), [])) AS rules
    FROM audit_log
    WHERE event = 'decision' AND ts >= $since AND ts < $until
),
per_rule AS (
    SELECT ts, effect, unnest(CASE WHEN len(rules) = 0 THEN ['(no rule)'] ELSE rules END) AS rule
    FROM decided
)
SELECT CAST(date_trunc('day', ts) AS DATE) AS day, rule, effect, count(*) AS decisions
FROM per_rule
GROUP BY ALL
ORDER BY day, rule, effect;
