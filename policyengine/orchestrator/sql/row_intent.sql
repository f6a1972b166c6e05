-- Record the intent to run a side-effecting step (committed on its own, before the call).
INSERT INTO orch_intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
