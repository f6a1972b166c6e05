-- title: Shadow mode: what a candidate policy would decide otherwise
-- description: `policyengine serve --shadow CANDIDATE` decides every request again under a
--   candidate policy and records each difference as a shadow_diff event (the live answer
--   never changes). Per candidate policy, transition (allow -> deny, ...) and the rules that
--   made the difference: how many live decisions would change, when first and last, and
--   the audit seq of the first live decision concerned (an example to look at).
-- regulation: EU AI Act Art. 9 (risk management: testing before change) and Art. 17 (change control); ISO/IEC 42001 A.6.2.4
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
SELECT payload ->> '$.candidate.policy_hash'                             AS candidate_hash,
       payload ->> '$.transition'                                        AS transition,
       array_to_string(CAST(payload -> '$.rules' AS VARCHAR[]), ' ')     AS rules,
       count(*)                                                          AS decisions,
       min(ts)                                                           AS first_seen,
       max(ts)                                                           AS last_seen,
       min(TRY_CAST(payload ->> '$.live_seq' AS BIGINT))                 AS example_seq
FROM audit_log
WHERE event = 'shadow_diff' AND ts >= $since AND ts < $until
GROUP BY ALL
ORDER BY decisions DESC, transition, rules;
