-- budget_expire: drop every hold whose deadline has passed; one row per hold dropped.
DELETE FROM budget_reservations WHERE expires_at <= %(now)s RETURNING id;
