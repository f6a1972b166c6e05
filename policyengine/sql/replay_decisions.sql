-- The recorded decision requests of an audit log with seq in ($after, $last], oldest
-- first, within [$since, $until) when given (keyset pagination: $limit rows at a
-- time). One json_extract_string call pulls the step, the recorded effect and route
-- and the request text at once; the time comes as epoch microseconds.
SELECT seq,
       epoch_us(ts) AS ts_us,
       workflow,
       run_id,
       json_extract_string(payload, ['$.step', '$.decision.effect', '$.decision.route', '$.request']) AS fields,
       (payload->'$._masked') IS NOT NULL AS masked,
       policy_hash
FROM audit_log
WHERE event = 'decision'
  AND seq > $after
  AND seq <= $last
  AND ($since IS NULL OR ts >= $since)
  AND ($until IS NULL OR ts < $until)
ORDER BY seq
LIMIT $limit;
