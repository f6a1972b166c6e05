-- orch_run_counts: number of runs per status.
SELECT status, count(*) FROM orch_runs GROUP BY status ORDER BY status;
