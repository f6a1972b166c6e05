-- The rules a recorded decision named as its reasons (for the changed ones only).
SELECT seq, (payload->'$.decision.reasons[*].rule')::VARCHAR
FROM audit_log
WHERE seq IN (SELECT unnest($seqs));
