-- budget_expire_scope: drop the holds of one scope and unit whose deadline has passed, returning each
-- (to be charged at its estimate).
DELETE FROM budget_reservations WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND expires_at <= %(now)s
RETURNING id, scope_key, unit, amount, charged_at;
