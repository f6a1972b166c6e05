-- bias_input_from_audit_typed: bias_input_from_audit, also keeping the JSON type of each group
-- value (grp_type), so that 1 (a number) and "1" (a string), which json_extract_string prints
-- alike, stay two groups (json_types_alike.sql). A second parse of each payload: used only
-- when some group value could be of another type than a string (json_lookalikes.sql).
-- Parameters: model, group_path, positives, start (inclusive), end (exclusive), UTC.
INSERT INTO bias_input (line, grp, grp_type, pred, label, outcome_value, label_value)
SELECT
    seq,
    v[1],
    grp_type,
    list_contains($positives, v[2]),
    CASE WHEN v[3] IS NULL THEN NULL ELSE list_contains($positives, v[3]) END,
    v[2],
    v[3]
FROM (
    SELECT seq, json_extract_string(payload, [$group_path, '$.outcome', '$.label', '$.model']) AS v,
           json_type(payload, $group_path) AS grp_type
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end
)
WHERE v[4] = $model AND v[2] IS NOT NULL;
