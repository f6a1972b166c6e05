-- Workflow runs whose latest run event falls in the period, by workflow, status and outcome.
WITH latest AS (
    SELECT workflow, payload->>'$.status' AS status, payload->>'$.outcome' AS outcome
    FROM audit_log
    WHERE event = 'run' AND ts >= $since AND ts < $until
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY seq DESC) = 1
)
SELECT workflow, status, outcome, count(*) AS runs
FROM latest
GROUP BY ALL
ORDER BY workflow, runs DESC, status, outcome;
