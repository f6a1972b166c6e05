-- title: Model inventory
-- description: Every model that was asked for or called: by how many principals and
--   workflows, how often, what it cost and how often it failed, first and last seen.
--   The model-sprawl view: a model here that is not in the registry is shadow AI.
-- regulation: EU AI Act Art. 49/71 (registration) and Art. 26 (deployer obligations); ISO/IEC 42001 A.4 (AI system inventory)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
WITH calls AS (
    SELECT payload ->> '$.model' AS model,
           any_value(payload ->> '$.provider')                                   AS provider,
           count(*)                                                              AS calls,
           count(*) FILTER (WHERE coalesce(payload ->> '$.status', 'ok') <> 'ok') AS failed_calls,
           count(DISTINCT actor)                                                 AS callers,
           count(DISTINCT workflow)                                              AS workflows,
           sum(coalesce(TRY_CAST(payload ->> '$.tokens' AS BIGINT), 0))          AS tokens,
           round(sum(coalesce(TRY_CAST(payload ->> '$.cost_usd' AS DOUBLE), 0)), 6) AS cost_usd,
           round(avg(TRY_CAST(payload ->> '$.latency_ms' AS DOUBLE)), 1)         AS avg_latency_ms,
           string_agg(DISTINCT actor, ', ' ORDER BY actor)                       AS called_by,
           min(ts) AS first_call, max(ts) AS last_call
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $since AND ts < $until
    GROUP BY 1
),
asked AS (
    SELECT coalesce(payload ->> '$.decision.route', payload ->> '$.request.resource.id') AS model,
           count(*)                                                                AS decisions,
           count(*) FILTER (WHERE payload ->> '$.decision.effect' = 'deny')       AS denied,
           count(DISTINCT actor)                                                   AS requesters,
           min(ts) AS first_asked
    FROM audit_log
    WHERE event = 'decision' AND payload ->> '$.request.resource.kind' = 'model'
      AND ts >= $since AND ts < $until
    GROUP BY 1
)
SELECT
    coalesce(c.model, a.model)              AS model,
    c.provider,
    coalesce(a.decisions, 0)                AS decisions,
    coalesce(a.denied, 0)                   AS denied,
    coalesce(c.calls, 0)                    AS calls,
    coalesce(c.failed_calls, 0)             AS failed_calls,
    greatest(coalesce(c.callers, 0), coalesce(a.requesters, 0)) AS principals,
    coalesce(c.workflows, 0)                AS workflows,
    coalesce(c.tokens, 0)                   AS tokens,
    coalesce(c.cost_usd, 0)                 AS cost_usd,
    c.avg_latency_ms,
    c.called_by,
    least(c.first_call, a.first_asked)      AS first_seen,
    c.last_call
FROM calls c FULL OUTER JOIN asked a ON a.model = c.model
WHERE coalesce(c.model, a.model) IS NOT NULL
ORDER BY calls DESC, decisions DESC, model;
