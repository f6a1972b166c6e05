-- Number of runs per status (for summaries).
SELECT status, count(*) FROM orch_runs GROUP BY status ORDER BY status
