-- drift_input_from_audit_typed: drift_input_from_audit with the text of every value, also keeping
-- its JSON type (cat_type), so that 1 (a number) and "1" (a string), which json_extract_string
-- prints alike, stay two categories (json_types_alike.sql), and a string is never counted as a
-- number (drift_input_strings.sql). A second parse of each payload: used when the values are
-- compared as categories and some could be of another type than a string (json_lookalikes.sql),
-- or as numbers and some is a string (drift_facts_strings.sql, drift_payload_strings.sql).
-- Parameters: model, path, start, split, end, with_ts.
INSERT INTO drift_input (side, line, num, cat, cat_type, ts)
SELECT
    CASE WHEN ts < $split THEN 'reference' ELSE 'current' END,
    seq,
    TRY_CAST(v[1] AS DOUBLE),
    v[1],
    cat_type,
    CASE WHEN $with_ts THEN ts END
FROM (
    SELECT seq, ts, json_extract_string(payload, [$path, '$.model']) AS v, json_type(payload, $path) AS cat_type
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end
)
WHERE v[2] = $model;
