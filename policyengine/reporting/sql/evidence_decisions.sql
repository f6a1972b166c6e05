-- Decisions in the period by workflow and effect.
SELECT coalesce(workflow, '(direct)') AS workflow,
       count(*) AS decisions,
       count(*) FILTER (WHERE payload->>'$.decision.effect' = 'allow') AS allow,
       count(*) FILTER (WHERE payload->>'$.decision.effect' = 'deny') AS deny,
       count(*) FILTER (WHERE payload->>'$.decision.effect' = 'escalate') AS escalate
FROM audit_log
WHERE event = 'decision' AND ts >= $since AND ts < $until
GROUP BY ALL
ORDER BY decisions DESC, workflow;
