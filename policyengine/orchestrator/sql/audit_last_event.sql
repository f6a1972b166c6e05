-- The payload of the newest audit record of one event type (the directory last recorded).
SELECT payload FROM audit_log WHERE event = $event ORDER BY seq DESC LIMIT 1
