-- Write one orch_approvals row (small flushes: cheaper than registering an Arrow table).
INSERT OR REPLACE INTO orch_approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
