-- Bring one orch_approvals row up to date in place: its columns after (run_id, step, gate), then those (state.py).
UPDATE orch_approvals SET role = ?, requester = ?, requested_at = ?, deadline_at = ?, on_timeout = ?,
    distinct_approver = ?, status = ?, approver = ?, note = ?, decided_at = ?
WHERE run_id = ? AND step = ? AND gate = ?
