-- drift_input_from_audit: one payload value of one model's model_call events,
-- split into the reference window [start, split) and the current window [split, end).
-- Both keys are read in one pass over each payload (one JSON parse per row).
-- Parameters: model, path (JSON path such as $."output"."confidence"), start, split, end.
INSERT INTO drift_input (side, line, num, cat, ts)
SELECT CASE WHEN ts < $split THEN 'reference' ELSE 'current' END, seq, TRY_CAST(v[1] AS DOUBLE), v[1], ts
FROM (
    SELECT seq, ts, json_extract_string(payload, [$path, '$.model']) AS v
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end
)
WHERE v[2] = $model AND v[1] IS NOT NULL AND v[1] <> '';
