-- title: Agent activity by owner
-- description: What each AI agent did, grouped under the person or team accountable for
--   it: decisions by effect, model and tool calls, data accesses, tokens and cost. The
--   owner comes from the agent declaration when the policy is known (--rules), else from
--   the request's principal attributes.
-- regulation: EU AI Act Art. 26 (deployer oversight) and Art. 14 (human oversight); ISO/IEC 42001 A.3 (accountability)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
WITH agents AS (
    SELECT DISTINCT actor AS agent, payload ->> '$.request.principal.attrs.owner' AS claimed_owner
    FROM audit_log
    WHERE event = 'decision' AND payload ->> '$.request.principal.type' = 'agent'
      AND ts >= $since AND ts < $until
    UNION
    SELECT agent, NULL FROM policy_agents
),
owners AS (
    SELECT a.agent, coalesce(any_value(p.owner), max(a.claimed_owner), '(unknown)') AS owner
    FROM agents a LEFT JOIN policy_agents p ON p.agent = a.agent
    GROUP BY a.agent
),
activity AS (
    SELECT actor AS agent,
           count(*) FILTER (WHERE event = 'decision')                                             AS decisions,
           count(*) FILTER (WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'allow')    AS allowed,
           count(*) FILTER (WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'deny')     AS denied,
           count(*) FILTER (WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'escalate') AS escalated,
           count(*) FILTER (WHERE event = 'model_call')                                           AS model_calls,
           count(*) FILTER (WHERE event = 'tool_call')                                            AS tool_calls,
           count(*) FILTER (WHERE event = 'data_access')                                          AS data_accesses,
           sum(TRY_CAST(payload ->> '$.tokens' AS BIGINT)) FILTER (WHERE event = 'model_call')    AS tokens,
           round(sum(TRY_CAST(payload ->> '$.cost_usd' AS DOUBLE)) FILTER (WHERE event = 'model_call'), 6) AS cost_usd,
           min(ts) AS first_seen, max(ts) AS last_seen
    FROM audit_log
    WHERE ts >= $since AND ts < $until AND actor IN (SELECT agent FROM owners)
    GROUP BY actor
)
SELECT o.owner, o.agent,
       coalesce(decisions, 0) AS decisions, coalesce(allowed, 0) AS allowed,
       coalesce(denied, 0) AS denied, coalesce(escalated, 0) AS escalated,
       coalesce(model_calls, 0) AS model_calls, coalesce(tool_calls, 0) AS tool_calls,
       coalesce(data_accesses, 0) AS data_accesses, coalesce(tokens, 0) AS tokens,
       coalesce(cost_usd, 0) AS cost_usd, first_seen, last_seen
FROM owners o LEFT JOIN activity a ON a.agent = o.agent
ORDER BY o.owner, o.agent;
