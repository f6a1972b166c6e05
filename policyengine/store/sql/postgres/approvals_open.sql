-- approvals_open: a pending gate (opening it again changes nothing).
INSERT INTO store_approvals (run_id, gate, role, requester, deadline, status)
VALUES (%(run_id)s, %(gate)s, %(role)s, %(requester)s, %(deadline)s, 'pending')
ON CONFLICT (run_id, gate) DO NOTHING;
