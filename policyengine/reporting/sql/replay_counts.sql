-- Recorded decisions in the period by the policy hash that made them, and how many were masked.
SELECT coalesce(policy_hash, '(none)') AS policy_hash, count(*) AS records,
       count(*) FILTER (WHERE (payload->'$._masked') IS NOT NULL) AS masked
FROM audit_log
WHERE event = 'decision' AND ($since IS NULL OR ts >= $since) AND ($until IS NULL OR ts < $until)
GROUP BY ALL
ORDER BY records DESC;
