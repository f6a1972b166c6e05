-- policy_activations: `serve`'s policy_activated records, newest first (a restart may not go back before them).
SELECT seq, payload
FROM audit_log
WHERE event = 'policy_activated'
ORDER BY seq DESC;
