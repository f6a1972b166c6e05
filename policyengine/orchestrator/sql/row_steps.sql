-- Write one new orch_steps row (small flushes: cheaper than registering an Arrow table), after
-- update_steps found none to change.
INSERT INTO orch_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
