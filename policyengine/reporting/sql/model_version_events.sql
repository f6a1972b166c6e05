-- model_version_events: the version registry's events (model_version, model_version_requested, ...), oldest first.
SELECT seq, ts, event, payload
FROM audit_log
WHERE event IN (SELECT unnest($events::VARCHAR[]))
ORDER BY seq;
