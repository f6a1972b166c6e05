-- orch_approval_upsert: write one approval-gate row (a decision is taken by orch_decide_gate, not here).
INSERT INTO orch_approvals (run_id, step, gate, role, requester, requested_at, deadline_at, on_timeout, distinct_approver, status, approver, note, decided_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, step, gate) DO UPDATE SET
    role = excluded.role, requester = excluded.requester, requested_at = excluded.requested_at,
    deadline_at = excluded.deadline_at, on_timeout = excluded.on_timeout,
    distinct_approver = excluded.distinct_approver, status = excluded.status, approver = excluded.approver,
    note = excluded.note, decided_at = excluded.decided_at;
