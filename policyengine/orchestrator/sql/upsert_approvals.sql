-- Write buffered approval rows (registered as _pe_approvals) in one statement.
INSERT OR REPLACE INTO orch_approvals SELECT * FROM _pe_approvals
