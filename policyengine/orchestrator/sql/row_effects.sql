-- Write one orch_effects row (small flushes: cheaper than registering an Arrow table).
INSERT OR IGNORE INTO orch_effects VALUES (?, ?, ?, ?, ?, ?)
