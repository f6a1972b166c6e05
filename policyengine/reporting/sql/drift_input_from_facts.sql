-- drift_input_from_facts: drift_input_from_audit, read from audit_facts (policyengine/audit/facts.py),
-- whose columns hold the payload values json_extract_string gives, one column per JSON path.
-- {value} is the quoted column of the path (the caller checked it exists; identifiers cannot be
-- bound parameters). Calls without a value are kept too (drift_input_drop_missing counts and
-- removes them). Parameters: model, start, split, end, keep_text, with_ts.
INSERT INTO drift_input (side, line, num, cat, ts)
SELECT
    CASE WHEN ts < $split THEN 'reference' ELSE 'current' END,
    seq,
    num,
    CASE WHEN $keep_text OR num IS NULL THEN v END,
    CASE WHEN $with_ts THEN ts END
FROM (
    SELECT seq, ts, v, TRY_CAST(v AS DOUBLE) AS num
    FROM (
        SELECT seq, ts, {value} AS v
        FROM audit_facts
        WHERE "$.""model""" = $model AND ts >= $start AND ts < $end
    )
);
