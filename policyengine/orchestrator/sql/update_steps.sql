-- Bring one orch_steps row up to date in place: its columns after (run_id, step), then run_id, step (state.py).
UPDATE orch_steps SET ord = ?, kind = ?, status = ?, idem_key = ?, output = ?, effect = ?, reason = ?, model = ?,
    tokens = ?, cost_usd = ?, latency_ms = ?, started_at = ?, finished_at = ?
WHERE run_id = ? AND step = ?
