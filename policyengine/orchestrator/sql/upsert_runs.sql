-- Write buffered run rows (registered as _pe_runs) in one statement.
INSERT OR REPLACE INTO orch_runs SELECT * FROM _pe_runs
