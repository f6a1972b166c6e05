-- bias_input_from_audit: fill bias_input from the model_call events of one model.
-- A call is selected when its payload "outcome" is one of the positive values; its
-- ground truth, when the payload has a "label", is positive on the same values.
-- Calls without an outcome (errors, timeouts) are not decisions and are left out.
-- The four keys are read in one pass over each payload (one JSON parse per row).
-- Parameters: model, group_path (JSON path such as $."subject"."vendor_region"),
-- positives (list of outcome values), start (inclusive), end (exclusive), UTC.
INSERT INTO bias_input (line, grp, pred, label, outcome_value, label_value)
SELECT
    seq,
    v[1],
    list_contains($positives, v[2]),
    CASE WHEN v[3] IS NULL THEN NULL ELSE list_contains($positives, v[3]) END,
    v[2],
    v[3]
FROM (
    SELECT seq, json_extract_string(payload, [$group_path, '$.outcome', '$.label', '$.model']) AS v
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end
)
WHERE v[4] = $model AND v[2] IS NOT NULL;
