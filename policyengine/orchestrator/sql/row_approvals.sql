-- Write one new orch_approvals row (small flushes: cheaper than registering an Arrow table), after
-- update_approvals found none to change.
INSERT INTO orch_approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
