-- drift_input_from_audit: one payload value of one model's model_call events,
-- split into the reference window [start, split) and the current window [split, end).
-- Both keys are read in one pass over each payload (one JSON parse per row). Calls without a
-- value are kept too (drift_input_drop_missing counts and removes them).
-- The text of a value is kept only when it is not a number or keep_text is true,
-- and the time only when with_ts is true (PSI over time): fewer columns to write.
-- Parameters: model, path (JSON path such as $."output"."confidence"), start, split,
-- end, keep_text, with_ts.
INSERT INTO drift_input (side, line, num, cat, ts)
SELECT
    CASE WHEN ts < $split THEN 'reference' ELSE 'current' END,
    seq,
    num,
    CASE WHEN $keep_text OR num IS NULL THEN v[1] END,
    CASE WHEN $with_ts THEN ts END
FROM (
    SELECT seq, ts, v, TRY_CAST(v[1] AS DOUBLE) AS num
    FROM (
        SELECT seq, ts, json_extract_string(payload, [$path, '$.model']) AS v
        FROM audit_log
        WHERE event = 'model_call' AND ts >= $start AND ts < $end
    )
    WHERE v[2] = $model
);
