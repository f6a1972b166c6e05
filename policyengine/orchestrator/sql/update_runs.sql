-- Bring one orch_runs row up to date in place: its columns after run_id, then run_id (state.py).
UPDATE orch_runs SET batch_id = ?, workflow = ?, item_id = ?, requested_by = ?, status = ?, outcome = ?, input = ?,
    error = ?, policy_hash = ?, tokens = ?, cost_usd = ?, created_at = ?, updated_at = ?
WHERE run_id = ?
