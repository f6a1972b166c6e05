-- drift_facts_strings: whether some model_call of the model in [start, end) may hold a string at a path whose
-- parent object has an audit_facts column ({parent}). The column keeps "1" and 1 alike as 1, but its parent's is
-- the object as yyjson prints it, with no space: a string member reads "key":" there and a number "key":1. Cheaper
-- than reading every payload's json_type (a short column, no JSON parse); a match elsewhere in the object only
-- costs the caller a read of the types. {parent} is a quoted identifier (it cannot be a bound parameter).
-- Parameters: model, start, end, key (the member's name, unquoted).
SELECT EXISTS (
    SELECT 1
    FROM audit_facts
    WHERE "$.""model""" = $model AND ts >= $start AND ts < $end
      AND contains({parent}, to_json($key::VARCHAR)::VARCHAR || ':"')
);
