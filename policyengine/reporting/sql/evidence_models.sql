-- Models called in the period, with the version each call recorded (model_version) when it did.
SELECT payload->>'$.model' AS model,
       payload->>'$.provider' AS provider,
       coalesce(payload->>'$.model_version', '(not recorded)') AS version,
       count(*) AS calls,
       count(*) FILTER (WHERE payload->>'$.status' <> 'ok') AS failed,
       min(ts) AS first_call,
       max(ts) AS last_call
FROM audit_log
WHERE event = 'model_call' AND ts >= $since AND ts < $until
GROUP BY ALL
ORDER BY model, version;
