-- orch_approvals_of_run: every approval gate a run has met, oldest first.
SELECT run_id, step, gate, role, requester, requested_at, deadline_at, on_timeout, distinct_approver, status, approver, note, decided_at FROM orch_approvals WHERE run_id = %(run_id)s ORDER BY requested_at, step;
