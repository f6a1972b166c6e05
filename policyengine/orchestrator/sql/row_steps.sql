-- Write one orch_steps row (small flushes: cheaper than registering an Arrow table).
INSERT OR REPLACE INTO orch_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
