-- How many decision records a replay covers, and their first and last seq.
SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0)
FROM audit_log
WHERE event = 'decision'
  AND ($since IS NULL OR ts >= $since)
  AND ($until IS NULL OR ts < $until);
