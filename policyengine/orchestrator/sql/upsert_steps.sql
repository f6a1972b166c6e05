-- Write buffered step-journal rows (registered as _pe_steps) in one statement.
INSERT OR REPLACE INTO orch_steps SELECT * FROM _pe_steps
