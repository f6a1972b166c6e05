-- approvals_decide: decide a pending gate before its deadline; no row if it was decided or expired already.
UPDATE store_approvals SET status = %(status)s, decided_by = %(user)s, decided_at = %(at)s
WHERE run_id = %(run_id)s AND gate = %(gate)s AND status = 'pending'
  AND (deadline IS NULL OR deadline > %(at)s)
RETURNING run_id;
