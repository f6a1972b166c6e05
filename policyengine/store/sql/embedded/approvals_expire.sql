-- approvals_expire: pending gates past their deadline become expired; each row is returned to one caller only.
UPDATE store_approvals SET status = 'expired', decided_at = $now
WHERE status = 'pending' AND deadline <= $now
RETURNING run_id, gate, role, requester, deadline, status, decided_by;
