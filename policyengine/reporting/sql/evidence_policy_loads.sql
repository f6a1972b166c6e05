-- policy_loaded events in the period: who loaded which files, under which hash, signed by which key.
SELECT ts, actor, policy_hash, payload->>'$.rules' AS rules, (payload->'$.files')::VARCHAR AS files, key_id AS signed_by
FROM audit_log
WHERE event = 'policy_loaded' AND ts >= $since AND ts < $until
ORDER BY seq;
