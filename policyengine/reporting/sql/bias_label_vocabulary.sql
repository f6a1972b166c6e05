-- bias_label_vocabulary: whether the payload "label" speaks the language of "outcome".
-- Equalized odds needs ground truth on the outcome (was auto_resolved right?); a
-- label that is a class name of the model's own task ("duplicate") never equals
-- an outcome, and must not be read as "never positive".
-- Parameters: model, start, end.
WITH calls AS (
    SELECT payload ->> '$.outcome' AS outcome, payload ->> '$.label' AS label
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end AND payload ->> '$.model' = $model
)
SELECT
    count(label)                                                                   AS labelled,
    count(*) FILTER (WHERE label IN (SELECT DISTINCT outcome FROM calls WHERE outcome IS NOT NULL)) AS outcome_labels,
    string_agg(DISTINCT label, ', ' ORDER BY label)                                AS label_values
FROM calls;
