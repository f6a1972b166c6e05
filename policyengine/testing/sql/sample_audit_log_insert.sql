-- sample_audit_log_insert: one model_call event per sample row, repeated `count` times.
-- Parameters: ts (list of UTC times), payload (list of JSON texts), n (list of counts),
-- three lists of the same length, one item per sample row.
INSERT INTO audit_log (seq, ts, event, payload)
SELECT row_number() OVER (ORDER BY row_no, copy), ts, 'model_call', payload
FROM (
    SELECT row_no, ts, payload, unnest(range(n)) AS copy
    FROM (
        SELECT unnest(range(len($ts))) AS row_no,
               unnest($ts::TIMESTAMPTZ[]) AS ts,
               unnest($payload::VARCHAR[])::JSON AS payload,
               unnest($n::BIGINT[]) AS n
    )
);
