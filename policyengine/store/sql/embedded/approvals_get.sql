-- approvals_get: one gate.
SELECT run_id, gate, role, requester, deadline, status, decided_by FROM store_approvals
WHERE run_id = $run_id AND gate = $gate;
