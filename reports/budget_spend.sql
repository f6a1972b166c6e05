-- title: Budget spend per workflow, model and agent
-- description: Tokens and USD spent by model calls per window, for every workflow, model
--   and calling agent, next to the limit of a budget on that scope and window when the
--   policy is known (pass --rules; otherwise the limit columns are empty).
-- regulation: SOX 404 (cost controls); EU AI Act Art. 9 (risk management); FinOps policy
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
-- param: window CHOICE(hour,day,month) = day | the calendar UTC window to sum over
WITH calls AS (
    SELECT date_trunc($window, ts) AS window_start, workflow, actor,
           payload ->> '$.model'                          AS model,
           coalesce(TRY_CAST(payload ->> '$.tokens' AS BIGINT), 0)    AS tokens,
           coalesce(TRY_CAST(payload ->> '$.cost_usd' AS DOUBLE), 0)  AS cost_usd
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $since AND ts < $until
),
scoped AS (
    SELECT window_start, 'workflow' AS scope_kind, workflow AS scope, tokens, cost_usd FROM calls
    UNION ALL
    SELECT window_start, 'model', model, tokens, cost_usd FROM calls
    UNION ALL
    SELECT window_start, 'agent', actor, tokens, cost_usd FROM calls
),
spend AS (
    SELECT window_start, scope_kind, coalesce(scope, '(none)') AS scope,
           count(*) AS calls, sum(tokens) AS tokens, round(sum(cost_usd), 6) AS cost_usd
    FROM scoped GROUP BY ALL
),
limits AS (
    SELECT scope_kind, scope,
           min(amount) FILTER (WHERE unit = 'tokens') AS token_limit,
           min(amount) FILTER (WHERE unit = 'USD')    AS usd_limit
    FROM budget_limits
    WHERE "window" = $window
    GROUP BY ALL
)
SELECT
    CAST(s.window_start AS TIMESTAMP) AS window_start, s.scope_kind, s.scope, s.calls, s.tokens, s.cost_usd,
    l.token_limit,
    round(100.0 * s.tokens / l.token_limit, 1) AS token_pct,
    l.usd_limit,
    round(100.0 * s.cost_usd / l.usd_limit, 1) AS usd_pct
FROM spend s LEFT JOIN limits l ON l.scope_kind = s.scope_kind AND l.scope = s.scope
ORDER BY s.window_start, s.scope_kind, s.scope;
