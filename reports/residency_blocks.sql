-- title: Residency blocks by data origin and region
-- description: Requests denied by a data-residency rule, counted by the origin and
--   classification of the data and the compute region the engine judged (from the
--   reason it gave), per residency rule. A residency reason is one whose rule is a
--   residency rule of the policy (--rules) or whose message names a compute region.
-- regulation: GDPR Art. 44-49 (transfers to third countries); EU AI Act Art. 10 (data governance)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
WITH reasons AS (
    SELECT seq, ts, payload,
           unnest(json_extract(payload, '$.decision.reasons[*]')) AS reason
    FROM audit_log
    WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'deny'
      AND ts >= $since AND ts < $until
),
blocks AS (
    SELECT DISTINCT
        seq,
        reason ->> '$.rule' AS rule,
        coalesce(payload ->> '$.request.data.origin', '(unknown)')         AS data_origin,
        coalesce(payload ->> '$.request.data.classification', '(unknown)') AS classification,
        coalesce(nullif(regexp_extract(reason ->> '$.message', 'compute region ''?([^'',)]+)', 1), ''),
                 payload ->> '$.request.context.region', '(unknown)')      AS region
    FROM reasons
    WHERE reason ->> '$.rule' IN (SELECT rule_id FROM policy_rules WHERE kind = 'residency')
       OR reason ->> '$.message' LIKE '%compute region %'
)
SELECT rule, data_origin, classification, region, count(*) AS blocked_requests,
       min(seq) AS first_seq, max(seq) AS last_seq
FROM blocks
GROUP BY ALL
ORDER BY blocked_requests DESC, rule, data_origin, region;
