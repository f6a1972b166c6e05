-- title: Policy versions in force over time
-- description: Each policy set (by policy_hash) that decided anything: from when to when
--   it was in force, how many decisions it made, and the files and rule count it was
--   loaded with (from policy_loaded events). Answers "which rules applied on date X".
-- regulation: EU AI Act Art. 12 (traceability) and Art. 17 (quality management, change control); SOX 404 (change management)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
WITH seen AS (
    SELECT policy_hash,
           min(ts) AS first_seen, max(ts) AS last_seen,
           count(*) FILTER (WHERE event = 'decision') AS decisions,
           count(*) AS events
    FROM audit_log
    WHERE policy_hash IS NOT NULL AND policy_hash <> '' AND ts >= $since AND ts < $until
    GROUP BY policy_hash
),
loaded AS (
    SELECT policy_hash,
           arg_min(CAST(payload -> '$.files' AS VARCHAR), ts)            AS files,
           arg_min(TRY_CAST(payload ->> '$.rules' AS INTEGER), ts)       AS rules,
           min(ts)                                                       AS loaded_at
    FROM audit_log
    WHERE event = 'policy_loaded'
    GROUP BY policy_hash
)
SELECT s.policy_hash,
       coalesce(l.loaded_at, s.first_seen)                  AS in_force_from,
       lead(coalesce(l.loaded_at, s.first_seen)) OVER (ORDER BY coalesce(l.loaded_at, s.first_seen), s.policy_hash) AS superseded_at,
       s.first_seen, s.last_seen, s.decisions, s.events, l.rules, l.files
FROM seen s LEFT JOIN loaded l ON l.policy_hash = s.policy_hash
ORDER BY in_force_from, s.policy_hash;
