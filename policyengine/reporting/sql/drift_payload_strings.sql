-- drift_payload_strings: whether some model_call of the model in [start, end) holds a string at path (json_type
-- VARCHAR), asked of the payloads: the exact answer where audit_facts cannot give one (they keep "1" and 1 alike
-- as 1) and the path has no parent object column (drift_facts_strings.sql). json_type alone parses lighter than
-- json_extract_string of the values (~60 ms against ~250 ms to load 300,000 calls), and only the calls with a
-- string read their model. Parameters: model, path, start, end.
SELECT EXISTS (
    SELECT 1
    FROM audit_log
    WHERE event = 'model_call' AND ts >= $start AND ts < $end
      AND json_type(payload, $path) = 'VARCHAR' AND json_extract_string(payload, '$.model') = $model
);
