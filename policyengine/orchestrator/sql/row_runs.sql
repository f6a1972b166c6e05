-- Write one new orch_runs row (small flushes: cheaper than registering an Arrow table), after
-- update_runs found none to change. INSERT OR REPLACE cost DuckDB ~3 ms a row here, 3x this pair.
INSERT INTO orch_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
