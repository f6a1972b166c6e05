-- drift_calls_from_audit: drift_calls_from_facts, read from the payloads.
-- Parameters: model, start, split, end.
SELECT CASE WHEN ts < $split THEN 'reference' ELSE 'current' END AS side, count(*)
FROM audit_log
WHERE event = 'model_call' AND ts >= $start AND ts < $end AND json_extract_string(payload, '$.model') = $model
GROUP BY side;
