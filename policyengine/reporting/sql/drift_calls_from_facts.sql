-- drift_calls_from_facts: how many model_call events of one model each window holds, values or not
-- (drift_input_from_facts keeps only those with a value; the difference is reported as left out).
-- Parameters: model, start, split, end.
SELECT CASE WHEN ts < $split THEN 'reference' ELSE 'current' END AS side, count(*)
FROM audit_facts
WHERE "$.""model""" = $model AND ts >= $start AND ts < $end
GROUP BY side;
