-- budget_expire: drop every hold whose deadline has passed, returning each (to be charged at its estimate).
DELETE FROM budget_reservations WHERE expires_at <= %(now)s RETURNING id, scope_key, unit, amount, charged_at;
