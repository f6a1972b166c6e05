-- Write one orch_runs row (small flushes: cheaper than registering an Arrow table).
INSERT OR REPLACE INTO orch_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
