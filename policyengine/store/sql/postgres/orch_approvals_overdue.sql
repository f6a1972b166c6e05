-- orch_approvals_overdue: pending approvals whose deadline has passed at now.
SELECT run_id, step, gate, role, requester, requested_at, deadline_at, on_timeout, distinct_approver, status, approver, note, decided_at FROM orch_approvals
WHERE status = 'pending' AND deadline_at IS NOT NULL AND deadline_at <= %(now)s
ORDER BY deadline_at;
