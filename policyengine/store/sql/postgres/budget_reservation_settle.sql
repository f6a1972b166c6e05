-- budget_reservation_settle: mark one hold settled, returning what it was before ('held', 'released' or
-- 'expired') and its estimate; no row when it was settled already (a retried settle charges nothing) or is unknown.
WITH before AS (SELECT id, state FROM budget_reservations WHERE id = %(id)s AND state <> 'settled' FOR UPDATE)
UPDATE budget_reservations r SET state = 'settled' FROM before WHERE r.id = before.id
RETURNING before.state, r.amount;
