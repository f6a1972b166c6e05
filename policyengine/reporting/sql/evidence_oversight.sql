-- Human oversight in the period: approval events by gate, role, approver and outcome, with the
-- time from request to decision in seconds (median and max).
WITH a AS (
    SELECT payload->>'$.gate' AS gate,
           payload->>'$.role' AS role,
           coalesce(payload->>'$.approver', '(deadline)') AS approver,
           payload->>'$.outcome' AS outcome,
           epoch(try_cast(payload->>'$.decided_at' AS TIMESTAMPTZ))
             - epoch(try_cast(payload->>'$.requested_at' AS TIMESTAMPTZ)) AS latency_s
    FROM audit_log
    WHERE event = 'approval' AND ts >= $since AND ts < $until
)
SELECT gate, role, approver, outcome, count(*) AS decisions,
       round(median(latency_s), 1) AS median_latency_s, round(max(latency_s), 1) AS max_latency_s
FROM a
GROUP BY ALL
ORDER BY gate, outcome, approver;
