-- approvals_decide: decide a pending gate before its deadline; no row if it was decided or expired already.
UPDATE store_approvals SET status = $status, decided_by = $user, decided_at = $at
WHERE run_id = $run_id AND gate = $gate AND status = 'pending'
  AND (deadline IS NULL OR deadline > $at)
RETURNING run_id;
