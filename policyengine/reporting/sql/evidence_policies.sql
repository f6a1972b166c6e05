-- Policy versions that decided in [$since, $until): records per policy hash, first and last
-- use, and the keys whose checkpoints signed those records.
SELECT policy_hash,
       count(*) AS records,
       count(*) FILTER (WHERE event = 'decision') AS decisions,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       string_agg(DISTINCT key_id, ' ' ORDER BY key_id) AS signed_by
FROM audit_log
WHERE policy_hash IS NOT NULL AND ts >= $since AND ts < $until
GROUP BY policy_hash
ORDER BY first_seen;
