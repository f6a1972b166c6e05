-- bias_input_from_facts: bias_input_from_audit, read from audit_facts (policyengine/audit/facts.py),
-- whose columns hold the payload values json_extract_string gives, one column per JSON path.
-- {group} is the quoted column of the group path (the caller checked it exists; identifiers
-- cannot be bound parameters). Parameters: model, positives, start (inclusive), end (exclusive), UTC.
INSERT INTO bias_input (line, grp, pred, label, outcome_value, label_value)
SELECT
    seq,
    grp,
    list_contains($positives, outcome),
    CASE WHEN label IS NULL THEN NULL ELSE list_contains($positives, label) END,
    outcome,
    label
FROM (
    SELECT seq, {group} AS grp, "$.""outcome""" AS outcome, "$.""label""" AS label
    FROM audit_facts
    WHERE "$.""model""" = $model AND ts >= $start AND ts < $end
)
WHERE outcome IS NOT NULL;
