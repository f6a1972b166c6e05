-- Pending approvals whose deadline has passed at $now.
SELECT * FROM orch_approvals WHERE status = 'pending' AND deadline_at IS NOT NULL AND deadline_at <= $now ORDER BY deadline_at
