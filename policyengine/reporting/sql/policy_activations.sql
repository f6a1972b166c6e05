-- policy_activations: `serve`'s policy_activated records, newest first (a restart may not go back before them),
-- with when each was written (microseconds since 1970): the newest of several audit files of one --db wins.
SELECT seq, epoch_us(ts) AS ts_us, payload
FROM audit_log
WHERE event = 'policy_activated'
ORDER BY seq DESC;
