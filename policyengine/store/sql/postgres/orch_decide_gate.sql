-- orch_decide_gate: decide one pending gate; no row if it was decided, expired or cancelled already.
UPDATE orch_approvals SET status = %(status)s, approver = %(approver)s, note = %(note)s, decided_at = %(decided_at)s
WHERE run_id = %(run_id)s AND step = %(step)s AND gate = %(gate)s AND status = 'pending'
RETURNING gate;
