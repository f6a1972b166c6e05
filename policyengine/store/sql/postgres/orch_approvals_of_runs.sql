-- orch_approvals_of_runs: every approval gate several runs have met (the approver inbox lists many), each run's oldest first.
SELECT run_id, step, gate, role, requester, requested_at, deadline_at, on_timeout, distinct_approver, status, approver, note, decided_at FROM orch_approvals WHERE run_id = ANY(%(run_ids)s::text[]) ORDER BY run_id, requested_at, step;
